"""Spot checks (抽查): each day every manager gets a random sample of the previous day's follow-ups of
their team to mark genuine (真实) or fake (虚假). A fake follow-up stops counting as a real touch: the
customer's last follow-up, first contact and follow-ups-this-holding are recomputed from the genuine
ones (so the recycle clock runs from the last genuine touch) and ``followup_invalidated`` is sent.

The sample is set-based and deterministic for a day (a hash of the follow-up id salted with the day and
the app's secret orders the candidates), so running the job twice — or twice at once — samples the same
rows, and the unique follow-up key keeps each one checked at most once.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import BigInteger, Date, String, and_, cast, exists, func, literal, select, true
from sqlalchemy.orm import Session, aliased

from crm import clock, signals
from crm.dbutil import insert_ignore
from crm.models import FollowUp, Reminder, ReminderKind, ReminderStatus, SpotCheck, User
from crm.models.types import UTCDateTime
from crm.permissions import manages
from crm.reminders.sql import manager_id_of
from crm.settings import store

from .services import recompute_touches

VERDICTS = ("genuine", "fake")
VERDICT_LABELS = {"pending": "待抽查", "genuine": "真实", "fake": "虚假"}
_PRIME = 1000003


class SpotCheckError(ValueError):
    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


def _salt(day: date) -> int:
    secret = current_app.config.get("SECRET_KEY", "")
    return int(hashlib.sha256(f"{secret}:{day.isoformat()}".encode()).hexdigest()[:8], 16) % _PRIME


def sample_daily(session: Session, now: datetime, day: date | None = None) -> int:
    """Sample ``daily_sample`` follow-ups of ``day`` (default: yesterday, local) per manager. Idempotent:
    a manager who already has that day's sample gets nothing more. Returns rows added. Does not commit."""
    cfg = store.get(session, "spot_checks")
    if not cfg["enabled"]:
        return 0
    day = day or clock.local_today(at=now) - timedelta(days=1)
    start, end = clock.day_bounds(day)
    manager_id, u = manager_id_of(aliased(User))
    f = FollowUp
    # 64-bit arithmetic on both databases (a multiplicative hash of the id, salted per day).
    order = (
        cast(f.id, BigInteger) * literal(2654435761, BigInteger) + literal(_salt(day), BigInteger)
    ) % _PRIME
    ranked = (
        select(
            f.id.label("followup_id"),
            manager_id.label("manager_id"),
            func.row_number().over(partition_by=manager_id, order_by=(order, f.id)).label("rn"),
        )
        .select_from(f)
        .join(u, u.id == f.user_id)
        .where(
            f.at >= literal(start, UTCDateTime),
            f.at < literal(end, UTCDateTime),
            f.is_fake.is_(False),
            manager_id.is_not(None),
            ~exists().where(SpotCheck.followup_id == f.id),
        )
        .subquery()
    )
    already = exists().where(SpotCheck.manager_id == ranked.c.manager_id, SpotCheck.sampled_on == day)
    sel = select(ranked.c.followup_id, ranked.c.manager_id, literal(day, Date), literal("pending")).where(
        ranked.c.rn <= cfg["daily_sample"], ~already
    )
    stmt = insert_ignore(session, SpotCheck.__table__, ["followup_id"]).from_select(
        ["followup_id", "manager_id", "sampled_on", "verdict"], sel
    )
    added = session.execute(stmt).rowcount or 0
    if added:
        _notify_managers(session, day, now)
    return added


def _notify_managers(session: Session, day: date, now: datetime) -> None:
    """One in-app/robot notice per manager: "今日抽查: N 条跟进待核实" (unique per manager and day)."""
    counts = (
        select(SpotCheck.manager_id, func.count().label("n"))
        .where(SpotCheck.sampled_on == day, SpotCheck.verdict == "pending")
        .group_by(SpotCheck.manager_id)
        .subquery()
    )
    title = func.replace(
        literal(_("跟进抽查: %(n)s 条跟进待核实", n="{n}")), "{n}", cast(counts.c.n, String), type_=String
    )
    sel = select(
        counts.c.manager_id,
        literal(ReminderKind.SPOT_CHECK),
        title,
        literal(_("请核实团队成员昨天的跟进是否真实。")),
        literal(now, UTCDateTime),
        literal(ReminderStatus.OPEN),
        literal(f"spotcheck:{day.isoformat()}:") + cast(counts.c.manager_id, String),
        literal(now, UTCDateTime),
        literal(0),
    ).where(true())  # SQLite: an INSERT … SELECT with ON CONFLICT needs a WHERE to parse
    stmt = insert_ignore(session, Reminder.__table__, ["unique_key"]).from_select(
        ["user_id", "kind", "title", "body", "due_at", "status", "unique_key", "created_at", "round"], sel
    )
    session.execute(stmt)


def visible_checks(session: Session, manager: User, *, pending_only: bool = False, limit: int = 100):
    """The spot checks a manager works on (admins: everyone's), newest day first."""
    query = select(SpotCheck).join(FollowUp, FollowUp.id == SpotCheck.followup_id)
    if not manager.is_admin:
        query = query.where(SpotCheck.manager_id == manager.id)
    if pending_only:
        query = query.where(SpotCheck.verdict == "pending")
    return session.scalars(query.order_by(SpotCheck.sampled_on.desc(), SpotCheck.id).limit(limit)).all()


def mark(
    session: Session, manager: User, check_id: int, verdict: str, now: datetime, note: str | None = None
) -> SpotCheck:
    """Mark a sampled follow-up genuine or fake (a verdict can be changed). Does not commit."""
    if verdict not in VERDICTS:
        raise SpotCheckError(_("结论只能是 真实 或 虚假。"))
    if note and len(note) > 500:
        raise SpotCheckError(_("备注不能超过 500 字。"))
    check = session.get(SpotCheck, check_id)
    if check is None or not (
        manager.is_admin
        or (check.manager_id == manager.id and manages(session, manager, check.followup.user_id))
    ):
        raise SpotCheckError(_("找不到该抽查记录。"), "not_found")
    followup = check.followup
    was_fake = followup.is_fake
    check.verdict = verdict
    check.checked_at = now
    check.note = (note or "").strip() or None
    followup.is_fake = verdict == "fake"
    session.flush()
    if followup.is_fake != was_fake:
        recompute_touches(session, followup.customer, now)
        if followup.is_fake:
            signals.followup_invalidated.send(followup, session=session, now=now)
    _close_notice_when_done(session, check, now)
    return check


def _close_notice_when_done(session: Session, check: SpotCheck, now: datetime) -> None:
    pending = session.scalar(
        select(func.count()).where(
            SpotCheck.manager_id == check.manager_id,
            SpotCheck.sampled_on == check.sampled_on,
            SpotCheck.verdict == "pending",
        )
    )
    if not pending:
        session.execute(
            Reminder.__table__.update()
            .where(
                and_(
                    Reminder.unique_key == f"spotcheck:{check.sampled_on.isoformat()}:{check.manager_id}",
                    Reminder.status == ReminderStatus.OPEN,
                )
            )
            .values(status=ReminderStatus.DONE, done_at=now)
        )
