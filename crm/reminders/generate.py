"""Set-based reminder generation: one ``INSERT … SELECT`` per source, each row with a unique key, so a
pass can run any number of times (and two at once) without duplicating anything.

Sources (SPEC §5): each follow-up's next-contact time (``next:<followup>``, also written at save time),
grade cadence since the last real touch (``cadence:<customer>:<holding>:<last touch>``), first contact
of new customers (``new:<customer>:<holding>``), 高意向未推进 (``stalled:<customer>:<holding>:<stage clock>``)
and overdue escalation to the owner's manager (``overdue:<reminder>``, once per reminder). Recycle
warnings and escalations are inserted by the recycle engine through ``crm.notify``; custom reminders by
the rep. Each pass also cancels reminders of holdings that ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import String, and_, case, cast, exists, func, literal, null, or_, select, update
from sqlalchemy.orm import Session, aliased

from crm.dbutil import insert_ignore
from crm.models import Customer, FollowUp, Reminder, ReminderKind, ReminderStatus, Stage, StageKind, User
from crm.models.types import UTCDateTime
from crm.reminders.services import CONTACT_KINDS, cancel_stale
from crm.reminders.sql import as_text, manager_id_of, plus_seconds
from crm.settings import store

K = ReminderKind
COLUMNS = [
    "user_id",
    "customer_id",
    "kind",
    "title",
    "body",
    "due_at",
    "notify_at",
    "status",
    "unique_key",
    "source_followup_id",
    "subject_user_id",
    "created_at",
    "round",
]
# How far ahead cadence reminders are made: the morning's pass shows the whole day's work.
LOOKAHEAD = timedelta(hours=24)
# Next-contact plans and new-customer holdings older than this are left alone (history, not work).
RECENT = timedelta(days=30)


@dataclass
class GenerateResult:
    created: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return sum(self.created.values()) + self.escalated


def _ts(value: datetime):
    return literal(value, UTCDateTime)


def _title(prefix: str, expr):
    return func.substr(literal(prefix) + expr, 1, 200)


def _fmt(template: str, **values):
    """A translated message with ``{name}`` markers filled from SQL expressions (REPLACE), ≤ 200 chars."""
    expr = literal(template)
    for name, value in values.items():
        expr = func.replace(expr, "{" + name + "}", func.coalesce(value, ""), type_=String)
    return func.substr(expr, 1, 200)


def _key(*parts):
    expr = literal("")
    for part in parts:
        expr = expr + (literal(part) if isinstance(part, str) else cast(part, String))
    return expr


def _insert(session: Session, select_stmt) -> int:
    stmt = insert_ignore(session, Reminder.__table__, ["unique_key"]).from_select(COLUMNS, select_stmt)
    return session.execute(stmt).rowcount or 0


def _owned(c):
    return and_(c.owner_id.is_not(None), c.merged_into_id.is_(None))


def next_contacts(session: Session, now: datetime) -> int:
    """Each owned customer's latest genuine follow-up of the current holding → its next-contact time."""
    c, f = Customer, FollowUp
    latest = (
        select(func.max(f.id))
        .where(f.customer_id == c.id, f.is_fake.is_(False), f.holding_no == c.holding_no)
        .correlate(c)
        .scalar_subquery()
    )
    sel = (
        select(
            c.owner_id,
            c.id,
            literal(K.NEXT_CONTACT),
            _fmt(_("联系 %(name)s: %(plan)s", name="{name}", plan="{plan}"), name=c.name, plan=f.next_plan),
            func.substr(f.next_plan, 1, 2000),
            f.next_contact_at,
            null(),
            literal(ReminderStatus.OPEN),
            _key("next:", f.id),
            f.id,
            null(),
            _ts(now),
            literal(0),
        )
        .select_from(c)
        .join(f, f.id == latest)
        .where(_owned(c), c.last_followup_at >= _ts(now - RECENT), f.next_contact_at >= _ts(now - RECENT))
    )
    return _insert(session, sel)


def cadences(session: Session, now: datetime) -> int:
    """Grade cadence (A 7 / B 14 / C 30 days, settings) since the last real touch or the claim, for
    owned customers without an open contact reminder (a rep with a plan needs no cadence nudge)."""
    c, r = Customer, Reminder
    days = store.get(session, "cadence")["grade_days"]
    base = func.coalesce(c.last_followup_at, c.claimed_at)
    grade_days = case((c.grade == "A", days["A"]), (c.grade == "B", days["B"]), else_=days["C"])
    cutoff = case(
        (c.grade == "A", _ts(now + LOOKAHEAD - timedelta(days=days["A"]))),
        (c.grade == "B", _ts(now + LOOKAHEAD - timedelta(days=days["B"]))),
        else_=_ts(now + LOOKAHEAD - timedelta(days=days["C"])),
    )
    has_plan = exists().where(
        r.customer_id == c.id, r.status == ReminderStatus.OPEN, r.kind.in_(CONTACT_KINDS)
    )
    sel = select(
        c.owner_id,
        c.id,
        literal(K.CADENCE),
        _title(_("定期回访: "), c.name),
        literal(_("按客户等级的回访节奏,该联系了。")),
        plus_seconds(session, base, grade_days * 86400),
        null(),
        literal(ReminderStatus.OPEN),
        _key("cadence:", c.id, ":", c.holding_no, ":", as_text(base)),
        null(),
        null(),
        _ts(now),
        literal(0),
    ).where(_owned(c), base.is_not(None), base <= cutoff, ~has_plan)
    return _insert(session, sel)


def new_customers(session: Session, now: datetime) -> int:
    """New customers: first contact within N days (settings) of the claim or arrival; shown from then."""
    c = Customer
    n_days = store.get(session, "cadence")["new_customer_days"]
    base = func.coalesce(c.claimed_at, c.arrived_at)
    sel = select(
        c.owner_id,
        c.id,
        literal(K.NEW_CUSTOMER),
        _title(_("首次联系新客户: "), c.name),
        literal(_("新客户请在 %(n)s 天内完成首次联系。", n=n_days)),
        plus_seconds(session, base, n_days * 86400),
        base,
        literal(ReminderStatus.OPEN),
        _key("new:", c.id, ":", c.holding_no),
        null(),
        null(),
        _ts(now),
        literal(0),
    ).where(
        _owned(c),
        c.first_contact_at.is_(None),
        c.holding_followups == 0,
        base >= _ts(now - RECENT),
        base <= _ts(now),
    )
    return _insert(session, sel)


def stalled(session: Session, now: datetime) -> int:
    """高意向未推进: hot or grade A, in an open stage, no stage change for N days (settings)."""
    c = Customer
    n_days = store.get(session, "cadence")["stall_days"]
    clock_col = func.coalesce(c.last_stage_change_at, c.claimed_at)
    open_stage = or_(
        c.stage_id.is_(None),
        exists().where(Stage.id == c.stage_id, Stage.kind == StageKind.OPEN),
    )
    sel = select(
        c.owner_id,
        c.id,
        literal(K.STALLED),
        _title(_("高意向未推进: "), c.name),
        literal(_("高意向客户已 %(n)s 天没有阶段推进。", n=n_days)),
        plus_seconds(session, clock_col, n_days * 86400),
        null(),
        literal(ReminderStatus.OPEN),
        _key("stalled:", c.id, ":", c.holding_no, ":", as_text(clock_col)),
        null(),
        null(),
        _ts(now),
        literal(0),
    ).where(
        _owned(c),
        or_(c.is_hot.is_(True), c.grade == "A"),
        clock_col.is_not(None),
        clock_col <= _ts(now - timedelta(days=n_days)),
        open_stage,
    )
    return _insert(session, sel)


def escalate_overdue(session: Session, now: datetime) -> int:
    """A contact reminder overdue by N hours (settings) notifies the owner's manager, once."""
    hours = store.get(session, "cadence")["overdue_escalation_hours"]
    cutoff = _ts(now - timedelta(hours=hours))
    r = aliased(Reminder)
    manager_id, u = manager_id_of(aliased(User))
    c = aliased(Customer)
    overdue = and_(
        r.status == ReminderStatus.OPEN,
        r.kind.in_(CONTACT_KINDS),
        r.due_at <= cutoff,
        r.escalated_at.is_(None),
    )
    sel = (
        select(
            manager_id,
            r.customer_id,
            literal(K.OVERDUE_ESCALATION),
            _fmt(
                _("%(rep)s 逾期未跟进: %(what)s", rep="{rep}", what="{what}"),
                rep=u.name,
                what=func.coalesce(c.name, r.title),
            ),
            r.title,
            _ts(now),
            null(),
            literal(ReminderStatus.OPEN),
            _key("overdue:", r.id),
            null(),
            r.user_id,
            _ts(now),
            literal(0),
        )
        .select_from(r)
        .join(u, u.id == r.user_id)
        .outerjoin(c, c.id == r.customer_id)
        .where(overdue, manager_id.is_not(None))
    )
    created = _insert(session, sel)
    # Mark what now has its escalation, so the scan stays small and the reminder shows "已上报".
    escalation = aliased(Reminder)
    session.execute(
        update(Reminder)
        .where(
            Reminder.status == ReminderStatus.OPEN,
            Reminder.kind.in_(CONTACT_KINDS),
            Reminder.due_at <= cutoff,
            Reminder.escalated_at.is_(None),
            exists().where(escalation.unique_key == _key("overdue:", Reminder.id)),
        )
        .values(escalated_at=now)
        .execution_options(synchronize_session=False)
    )
    return created


def generate_all(session: Session, now: datetime) -> GenerateResult:
    """One generation pass: clean up stale reminders, then every source. Does not commit."""
    result = GenerateResult()
    result.cancelled = cancel_stale(session, now)
    result.created[K.NEXT_CONTACT] = next_contacts(session, now)
    result.created[K.NEW_CUSTOMER] = new_customers(session, now)
    result.created[K.CADENCE] = cadences(session, now)
    result.created[K.STALLED] = stalled(session, now)
    result.escalated = escalate_overdue(session, now)
    return result
