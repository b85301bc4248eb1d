"""Reminder actions used by every screen, the API and jobs: the next-contact reminder of a follow-up,
closing what a follow-up answered, custom reminders (自定义提醒), snooze (稍后提醒) and done (完成),
stale-reminder cleanup when a customer changes hands, and per-user notification settings.

Kinds and who they belong to:
- *contact* kinds (``next_contact``, ``cadence``, ``new_customer``, ``custom``) are tasks of the
  customer's owner; they make up 今日待联系 and 逾期未跟进 and can be escalated when overdue.
- *touch* kinds are answered by any real follow-up on the customer (``next_contact``, ``cadence``,
  ``new_customer`` and the manager's ``overdue_escalation``): a follow-up closes them all, because the
  new follow-up sets the next plan. Custom reminders, 高意向未推进 and recycle warnings stay open unless
  the follow-up answers that very reminder (a follow-up does not move a stage or lift every recycle rule).
- Customer-bound reminders of a holding go stale when the customer leaves it (released, recycled,
  transferred): they are cancelled, set-based (``cancel_stale``), on ``ownership_changed`` and in
  every generation pass.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from flask_babel import gettext as _
from sqlalchemy import Select, and_, bindparam, exists, or_, update
from sqlalchemy.orm import Session

from crm import clock, signals
from crm.dbutil import insert_ignore, prebuilt
from crm.inputguard import parse_id
from crm.models import Customer, FollowUp, Reminder, ReminderKind, ReminderStatus, Role, User
from crm.permissions import manages
from crm.reminders import settings as _sections  # noqa: F401  (registers the settings sections)
from crm.settings import store

K = ReminderKind
CONTACT_KINDS = (K.NEXT_CONTACT, K.CADENCE, K.NEW_CUSTOMER, K.CUSTOM)
TOUCH_KINDS = (K.NEXT_CONTACT, K.CADENCE, K.NEW_CUSTOMER, K.OVERDUE_ESCALATION)
RECYCLE_KINDS = (K.RECYCLE_WARNING, K.RECYCLE_ESCALATION)
# Reminders that belong to the customer's current holding (stale once it ends).
HOLDING_KINDS = (*CONTACT_KINDS, K.STALLED, K.RECYCLE_WARNING, K.RECYCLE_ESCALATION, K.OVERDUE_ESCALATION)
MAX_AHEAD = timedelta(days=366)
TITLE_MAX = 200
BODY_MAX = 2000

CHANNELS = ("in_app", "email", "dingtalk", "wecom", "webhook")
PUSH_CHANNELS = CHANNELS[1:]
CHANNEL_LABELS = {
    "in_app": "站内通知",
    "email": "邮件",
    "dingtalk": "钉钉机器人",
    "wecom": "企业微信机器人",
    "webhook": "Webhook",
}
# Robots are on by default (they only work once an admin configures one); email is opt-in.
DEFAULT_CHANNELS = ("in_app", "dingtalk", "wecom", "webhook")


class ReminderError(ValueError):
    """A refused reminder action; ``field`` names the input at fault, ``code`` is for the API."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.field = field
        self.code = code


# ---------------------------------------------------------------- time helpers


def user_tz(user: User | None) -> str | None:
    """The time zone days are counted in for ``user``: their team's, else the configured default."""
    if user is not None and user.team is not None and user.team.timezone:
        return user.team.timezone
    return None


def default_next_contact(session: Session, user: User | None, now: datetime) -> datetime:
    """The follow-up form's default next-contact time: +N days (settings) at a sensible local hour."""
    cfg = store.get(session, "cadence")
    tz = user_tz(user)
    day = clock.local_today(tz, now) + timedelta(days=cfg["default_next_days"])
    return clock.at_local(day, cfg["default_hour"], tz=tz)


def quick_picks(session: Session, user: User | None, now: datetime) -> list[tuple[str, datetime]]:
    """明天 / 3 天后 / 下周一 at the default hour, in the team's time zone (server-side twins of the
    ``data-pick`` buttons, used where JavaScript is off and by the snooze menu)."""
    hour = store.get(session, "cadence")["default_hour"]
    tz = user_tz(user)
    today = clock.local_today(tz, now)
    monday = today + timedelta(days=(7 - today.weekday()) or 7)
    return [
        (_("明天"), clock.at_local(today + timedelta(days=1), hour, tz=tz)),
        (_("3 天后"), clock.at_local(today + timedelta(days=3), hour, tz=tz)),
        (_("下周一"), clock.at_local(monday, hour, tz=tz)),
    ]


def check_future(value: datetime | None, now: datetime, field: str, missing: str) -> datetime:
    """A reminder time must be given, later than now and within a year."""
    if value is None:
        raise ReminderError(missing, field)
    if value <= now:
        raise ReminderError(_("时间必须晚于现在。"), field)
    if value > now + MAX_AHEAD:
        raise ReminderError(_("时间不能超过一年之后。"), field)
    return value


# ---------------------------------------------------------------- permissions


def can_act_on(session: Session, user: User, reminder: Reminder) -> bool:
    """The reminder's user, or someone who manages them (a manager clearing a rep's overdue item)."""
    return reminder.user_id == user.id or manages(session, user, reminder.user_id)


def get_for(session: Session, user: User, reminder_id: int) -> Reminder:
    reminder = session.get(Reminder, reminder_id)
    if reminder is None or not can_act_on(session, user, reminder):
        raise ReminderError(_("找不到该提醒。"), code="not_found")
    return reminder


# ---------------------------------------------------------------- follow-up effects


def reminder_user_for(customer: Customer, author: User) -> int | None:
    """Who gets a customer's next-contact reminder: its owner. A pool customer (unowned) gets none:
    whoever claims it next gets the new-customer reminder instead."""
    return customer.owner_id


def create_next_contact(session: Session, followup: FollowUp, customer: Customer, now: datetime) -> bool:
    """The reminder for a follow-up's next-contact time (idempotent: key ``next:<followup id>``)."""
    user_id = reminder_user_for(customer, followup.user)
    if user_id is None:
        return False
    title = _("联系 %(name)s: %(plan)s", name=customer.name, plan=followup.next_plan)
    stmt = insert_ignore(session, Reminder.__table__, ["unique_key"]).values(
        user_id=user_id,
        customer_id=customer.id,
        kind=K.NEXT_CONTACT,
        title=title[:TITLE_MAX],
        body=followup.next_plan[:BODY_MAX],
        due_at=followup.next_contact_at,
        status=ReminderStatus.OPEN,
        unique_key=f"next:{followup.id}",
        source_followup_id=followup.id,
        created_at=now,
    )
    return session.execute(stmt).rowcount == 1


def close_for_followup(
    session: Session, customer: Customer, user: User, now: datetime, answered: Reminder | None = None
) -> int:
    """Close what a real follow-up on ``customer`` answers: every open touch reminder of the customer
    (the new follow-up sets the next plan) and the reminder the rep followed up from. Set-based."""
    closed = session.execute(
        update(Reminder)
        .where(
            Reminder.customer_id == customer.id,
            Reminder.status == ReminderStatus.OPEN,
            Reminder.kind.in_(TOUCH_KINDS),
        )
        .values(status=ReminderStatus.DONE, done_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if answered is not None:
        closed += session.execute(
            update(Reminder)
            .where(Reminder.id == answered.id, Reminder.status == ReminderStatus.OPEN)
            .values(status=ReminderStatus.DONE, done_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    return closed


def answerable(session: Session, user: User, customer: Customer, reminder_id: int | None) -> Reminder | None:
    """The reminder a follow-up answers, if the user may act on it and it is about this customer."""
    reminder_id = parse_id(reminder_id)
    if not reminder_id:
        return None
    reminder = session.get(Reminder, reminder_id)
    if reminder is None or not can_act_on(session, user, reminder):
        return None
    if reminder.customer_id not in (None, customer.id):
        return None
    return reminder


# ---------------------------------------------------------------- custom reminders, snooze, done


def add_custom(
    session: Session,
    user: User,
    *,
    title: str,
    due_at: datetime | None,
    now: datetime,
    customer: Customer | None = None,
    body: str | None = None,
    for_user: User | None = None,
) -> Reminder:
    """自定义提醒 ("下周三提醒我发报价"): for the user, or for a rep the user manages. Does not commit."""
    from crm.permissions import can_edit_customer, can_view_customer

    title = (title or "").strip()
    if not title:
        raise ReminderError(_("请填写提醒内容。"), "title")
    if len(title) > TITLE_MAX:
        raise ReminderError(_("提醒内容不能超过 %(n)s 字。", n=TITLE_MAX), "title")
    if body and len(body) > BODY_MAX:
        raise ReminderError(_("备注不能超过 %(n)s 字。", n=BODY_MAX), "body")
    check_future(due_at, now, "due_at", _("请选择提醒时间。"))
    target = for_user or user
    if target.id != user.id and not manages(session, user, target):
        raise ReminderError(_("只能给自己或自己团队的成员设置提醒。"), "user_id", code="forbidden")
    if customer is not None and not can_view_customer(session, user, customer):
        raise ReminderError(_("找不到该客户。"), "customer_id", code="not_found")
    if customer is not None and (customer.owner_id is None or not can_edit_customer(session, user, customer)):
        # A reminder belongs to a holding: pool customers get none (claim first).
        raise ReminderError(_("只能为自己负责(或团队负责)的客户设置提醒。"), "customer_id", code="forbidden")
    reminder = Reminder(
        user_id=target.id,
        customer_id=customer.id if customer else None,
        kind=K.CUSTOM,
        title=title,
        body=(body or "").strip() or None,
        due_at=due_at,
        status=ReminderStatus.OPEN,
        unique_key=f"custom:{uuid.uuid4().hex}",
        created_by_id=user.id,
        created_at=now,
        round=0,
    )
    session.add(reminder)
    session.flush()
    return reminder


def snooze(
    session: Session, user: User, reminder: Reminder, until: datetime | None, now: datetime
) -> Reminder:
    """稍后提醒: move the reminder to ``until``. One already sent starts a new notification round, so it
    is delivered again then (each round exactly once per channel). Race-safe on the open status."""
    if not can_act_on(session, user, reminder):
        raise ReminderError(_("找不到该提醒。"), code="not_found")
    check_future(until, now, "until", _("请选择稍后提醒的时间。"))
    values = {
        "due_at": until,
        "notify_at": until,
        "original_due_at": reminder.original_due_at or reminder.due_at,
    }
    if reminder.fanned_out_at is not None:
        values |= {"fanned_out_at": None, "round": Reminder.round + 1}
    changed = session.execute(
        update(Reminder)
        .where(Reminder.id == reminder.id, Reminder.status == ReminderStatus.OPEN)
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ReminderError(_("该提醒已完成或已取消。"), code="conflict")
    session.refresh(reminder)
    return reminder


def complete(session: Session, user: User, reminder: Reminder, now: datetime) -> Reminder:
    """完成: close the reminder (without a follow-up — e.g. an informational notice)."""
    if not can_act_on(session, user, reminder):
        raise ReminderError(_("找不到该提醒。"), code="not_found")
    changed = session.execute(
        update(Reminder)
        .where(Reminder.id == reminder.id, Reminder.status == ReminderStatus.OPEN)
        .values(status=ReminderStatus.DONE, done_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ReminderError(_("该提醒已完成或已取消。"), code="conflict")
    session.refresh(reminder)
    return reminder


UNDO_SECONDS = 60


def reopen(session: Session, user: User, reminder: Reminder, now: datetime) -> Reminder:
    """撤销 a 完成 made in the last minute (the toast offers it for a few seconds): the reminder is open again."""
    if not can_act_on(session, user, reminder):
        raise ReminderError(_("找不到该提醒。"), code="not_found")
    changed = session.execute(
        update(Reminder)
        .where(
            Reminder.id == reminder.id,
            Reminder.status == ReminderStatus.DONE,
            Reminder.done_at >= now - timedelta(seconds=UNDO_SECONDS),
        )
        .values(status=ReminderStatus.OPEN, done_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ReminderError(_("已超过可撤销的时间。"), code="conflict")
    session.refresh(reminder)
    return reminder


# ---------------------------------------------------------------- stale reminders


def _stale_statement(customer_ids=None):
    """The UPDATE of ``cancel_stale`` (Core: it runs on every claim and move), for ``customer_ids`` (a bind
    parameter or a SELECT of ids) or every customer; ``:now`` is bound at execution."""
    c, r = Customer.__table__.c, Reminder.__table__.c
    live_holding = exists().where(
        c.id == r.customer_id,
        c.owner_id.is_not(None),
        or_(c.claimed_at.is_(None), c.claimed_at <= r.created_at),
    )
    still_stalled = exists().where(
        c.id == r.customer_id,
        or_(c.last_stage_change_at.is_(None), c.last_stage_change_at <= r.created_at),
        or_(c.is_hot.is_(True), c.grade == "A"),
    )
    stmt = (
        update(Reminder.__table__)
        .where(
            r.status == ReminderStatus.OPEN,
            r.customer_id.is_not(None),
            r.kind.in_(HOLDING_KINDS),
            or_(~live_holding, and_(r.kind == K.STALLED, ~still_stalled)),
        )
        .values(status=ReminderStatus.CANCELLED, done_at=bindparam("now"))
    )
    if customer_ids is not None:
        stmt = stmt.where(r.customer_id.in_(customer_ids))
    return stmt


_STALE_FOR_IDS = prebuilt(lambda _dialect: _stale_statement(bindparam("ids", expanding=True)))


def cancel_stale(session: Session, now: datetime, customer_ids: list[int] | Select | None = None) -> int:
    """Cancel open reminders of a holding that ended: the customer is unowned now, or its current
    holding began after the reminder was made (released, recycled, transferred, reclaimed), or a
    高意向未推进 reminder whose customer moved stage or cooled down since. One UPDATE."""
    if isinstance(customer_ids, Select):  # a SELECT of ids (set-based callers: no huge IN list)
        return session.execute(_stale_statement(customer_ids), {"now": now}).rowcount
    if customer_ids is None:
        return session.execute(_stale_statement(), {"now": now}).rowcount
    if not customer_ids:
        return 0
    return session.execute(_STALE_FOR_IDS(session), {"now": now, "ids": list(customer_ids)}).rowcount


@signals.ownership_changed.connect
def _on_ownership_changed(
    sender=None, *, session: Session, now: datetime, customer_ids=None, id_query: Select | None = None, **_kw
) -> None:
    """A customer left a rep: their reminders for it are stale (the generation pass catches the rest)."""
    if id_query is not None:
        cancel_stale(session, now, id_query)
        return
    ids = customer_ids if customer_ids is not None else getattr(sender, "customer_ids", None)
    if ids is None and isinstance(sender, list | tuple | set):
        ids = list(sender)
    if ids is None and isinstance(sender, Customer):
        ids = [sender.id]
    if ids:
        cancel_stale(session, now, list(ids))


@signals.stage_changed.connect
def _on_stage_changed(sender=None, *, session: Session, now: datetime, customer=None, **_kw) -> None:
    """A stage moved: the customer's 高意向未推进 reminder is answered."""
    target = customer if customer is not None else sender
    customer_id = getattr(target, "customer_id", None) or getattr(target, "id", None)
    if customer_id is None:
        return
    session.execute(
        update(Reminder)
        .where(
            Reminder.customer_id == customer_id,
            Reminder.kind == K.STALLED,
            Reminder.status == ReminderStatus.OPEN,
        )
        .values(status=ReminderStatus.DONE, done_at=now)
        .execution_options(synchronize_session=False)
    )


# ---------------------------------------------------------------- notification settings


@dataclass
class NotifyPrefs:
    channels: list[str]
    quiet_start: str | None  # "22:00"
    quiet_end: str | None  # "08:00"


def prefs_of(user: User) -> NotifyPrefs:
    raw = user.notify_prefs or {}
    channels = raw.get("channels")
    if not isinstance(channels, list):
        channels = list(DEFAULT_CHANNELS)
    channels = ["in_app"] + [c for c in channels if c in PUSH_CHANNELS]
    return NotifyPrefs(channels, raw.get("quiet_start") or None, raw.get("quiet_end") or None)


def _parse_hhmm(value: str | None) -> time | None:
    if not value:
        return None
    try:
        hour, minute = (int(part) for part in value.split(":"))
        return time(hour, minute)
    except (ValueError, TypeError):
        return None


def set_prefs(
    session: Session, user: User, channels: list[str], quiet_start: str | None, quiet_end: str | None
) -> NotifyPrefs:
    """Save which channels the user wants and their quiet hours (免打扰: deliveries wait until it ends)."""
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ReminderError(_("未知的通知渠道: %(c)s", c=", ".join(unknown)), "channels")
    start, end = _parse_hhmm(quiet_start), _parse_hhmm(quiet_end)
    if (quiet_start and start is None) or (quiet_end and end is None):
        raise ReminderError(_("免打扰时间格式应为 HH:MM。"), "quiet_start")
    if (start is None) != (end is None):
        raise ReminderError(_("免打扰需要同时填写开始和结束时间。"), "quiet_start")
    if start is not None and start == end:
        raise ReminderError(_("免打扰的开始和结束时间不能相同。"), "quiet_end")
    user.notify_prefs = {
        "channels": [c for c in CHANNELS if c in channels or c == "in_app"],
        "quiet_start": start.strftime("%H:%M") if start is not None else None,
        "quiet_end": end.strftime("%H:%M") if end is not None else None,
    }
    session.flush()
    return prefs_of(user)


def quiet_until(user: User, at: datetime) -> datetime | None:
    """If ``at`` falls in the user's quiet hours (in their team's time zone), when they end; else None."""
    prefs = prefs_of(user)
    start, end = _parse_hhmm(prefs.quiet_start), _parse_hhmm(prefs.quiet_end)
    if start is None or end is None or start == end:
        return None
    tz = user_tz(user)
    local = clock.local(at, tz)
    wall = local.time().replace(second=0, microsecond=0)
    day = local.date()
    if start < end:  # e.g. 12:00–13:30
        if start <= wall < end:
            return clock.at_local(day, end.hour, end.minute, tz=tz)
        return None
    # Across midnight, e.g. 22:00–08:00.
    if wall >= start:
        return clock.at_local(day + timedelta(days=1), end.hour, end.minute, tz=tz)
    if wall < end:
        return clock.at_local(day, end.hour, end.minute, tz=tz)
    return None


def is_manager_view(user: User) -> bool:
    return user.role in (Role.MANAGER, Role.ADMIN)
