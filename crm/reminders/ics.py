"""The calendar feed (日历订阅): each user's upcoming reminders as an ICS feed at a secret URL.

The URL carries a random token; only its SHA-256 is stored (``User.ics_token_hash``), so the URL can be
shown once, rotated (the old one stops working) or revoked. Phones subscribe to it (iOS 日历 / Google
Calendar) and refresh it themselves; each event has a 0-minute alarm.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from icalendar import Alarm, Calendar, Event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import Customer, Reminder, ReminderKind, ReminderStatus, User

FEED_DAYS_BACK = 7
FEED_DAYS_AHEAD = 90
FEED_LIMIT = 500
EVENT_MINUTES = 15


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def rotate_token(session: Session, user: User) -> str:
    """A new secret feed token for ``user`` (the old URL stops working). Returns the plain token."""
    token = secrets.token_urlsafe(24)
    user.ics_token_hash = _hash(token)
    session.flush()
    return token


def revoke_token(session: Session, user: User) -> None:
    user.ics_token_hash = None
    session.flush()


def user_for_token(session: Session, token: str) -> User | None:
    if not token or len(token) > 100:
        return None
    user = session.scalar(select(User).where(User.ics_token_hash == _hash(token)))
    if user is None or not user.active:
        return None
    return user


def feed(session: Session, user: User, now: datetime, app_url: str = "", label: str = "公海 CRM") -> bytes:
    """The ICS document of the user's open reminders from a week ago to three months ahead."""
    cal = Calendar()
    cal.add("prodid", "-//gonghai-crm//reminders//ZH")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", f"{label} · {user.name}")
    cal.add("x-wr-timezone", "UTC")
    # Clients refresh subscriptions on their own schedule; ask for hourly.
    cal.add("refresh-interval", timedelta(hours=1), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", "PT1H")
    when = func.coalesce(Reminder.notify_at, Reminder.due_at)
    rows = session.execute(
        select(Reminder, Customer.name)
        .outerjoin(Customer, Customer.id == Reminder.customer_id)
        .where(
            Reminder.user_id == user.id,
            Reminder.status == ReminderStatus.OPEN,
            Reminder.due_at >= now - timedelta(days=FEED_DAYS_BACK),
            when <= now + timedelta(days=FEED_DAYS_AHEAD),
        )
        .order_by(Reminder.due_at)
        .limit(FEED_LIMIT)
    ).all()
    for reminder, customer_name in rows:
        start = reminder.notify_at or reminder.due_at
        if reminder.kind == ReminderKind.NEW_CUSTOMER:
            start = max(start, now)  # a first-contact deadline: show it now, not in the past
        event = Event()
        event.add("uid", f"reminder-{reminder.id}@gonghai-crm")
        event.add("dtstamp", now)
        event.add("dtstart", start)
        event.add("dtend", start + timedelta(minutes=EVENT_MINUTES))
        event.add("summary", reminder.title)
        description = [reminder.body or ""]
        if customer_name:
            description.append(f"客户: {customer_name}")
        if app_url and reminder.customer_id:
            link = f"{app_url}/customers/{reminder.customer_id}/followup?reminder_id={reminder.id}"
            description.append(link)
            event.add("url", link)
        event.add("description", "\n".join(d for d in description if d))
        event.add("sequence", reminder.round)
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", reminder.title)
        alarm.add("trigger", timedelta(minutes=0))
        event.add_component(alarm)
        cal.add_component(event)
    return cal.to_ical()
