"""Inbox (工作台) sections for one user, counted in their team's local day:

- 今日待联系 ``today``: contact reminders due today, and new customers' first-contact reminders from the
  claim until their deadline.
- 逾期未跟进 ``overdue``: contact reminders due before today (at 00:00 local, yesterday's open work moves here).
- 高意向未推进 ``stalled``: hot or grade-A customers with no stage progress (generated reminders).
- 即将回收 ``recycle``: open recycle warnings and escalations the recycle engine created at warn time.

Each section is a count and its first items, from ONE query (a window function ranks and counts per
section), so the fragment stays fast however much history the reminders table holds. Managers also get
their team's overdue list (``team_overdue``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, bindparam, case, func, literal, or_, select
from sqlalchemy.orm import Session

from crm import clock
from crm.models import Customer, Reminder, ReminderKind, ReminderStatus, Role, User
from crm.models.types import UTCDateTime
from crm.permissions import team_member_ids
from crm.reminders.services import CONTACT_KINDS, RECYCLE_KINDS, user_tz

SECTIONS = ("today", "overdue", "stalled", "recycle")
LABELS = {
    "today": _l("今日待联系"),
    "overdue": _l("逾期未跟进"),
    "stalled": _l("高意向未推进"),
    "recycle": _l("即将回收"),
}
EMPTY = {
    "today": _l("今天没有待联系的客户。"),
    "overdue": _l("没有逾期未跟进的客户,保持住!"),
    "stalled": _l("高意向客户都在推进中。"),
    "recycle": _l("没有即将回收的客户。"),
}
LIMIT = 8


@dataclass
class Item:
    id: int
    kind: str
    title: str
    body: str | None
    due_at: datetime
    notify_at: datetime | None
    escalated_at: datetime | None
    user_id: int
    customer_id: int | None
    customer_name: str | None
    grade: str | None
    phone: str | None
    wechat: str | None
    is_hot: bool | None
    last_followup_at: datetime | None
    created_at: datetime
    section: str
    user_name: str | None = None
    due_local: str = (
        ""  # "03-10 15:00" in the user's zone, formatted once here (not per item in the template)
    )

    @property
    def kind_label(self):
        return _l(ReminderKind.LABELS.get(self.kind, self.kind))

    @property
    def text(self) -> str:
        """What to do, without repeating the customer's name shown above it."""
        if self.customer_name and self.body and self.customer_name in self.title:
            return self.body
        return self.title

    @property
    def touched_since(self) -> bool:
        """The customer got a real follow-up after this reminder was made (shown on recycle warnings)."""
        return bool(self.last_followup_at and self.last_followup_at > self.created_at)


@dataclass
class Section:
    key: str
    count: int = 0
    items: list[Item] = field(default_factory=list)

    @property
    def label(self):
        return LABELS[self.key]

    @property
    def empty_text(self):
        return EMPTY[self.key]

    @property
    def more(self) -> int:
        return max(0, self.count - len(self.items))


@dataclass
class TeamRow:
    user_id: int
    user_name: str
    count: int
    items: list[Item]


@dataclass
class Inbox:
    sections: dict[str, Section]
    day_start: datetime
    day_end: datetime
    team_overdue: list[TeamRow] | None = None
    # A fingerprint of everything the fragment shows: the polling client sends it back, and an unchanged
    # inbox answers 204 (no body, nothing swapped) instead of re-rendering dozens of items.
    version: str = ""

    @property
    def ordered(self) -> list[Section]:
        return [self.sections[k] for k in SECTIONS]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.sections.values())


def _section_expr(start):
    contact = Reminder.kind.in_(CONTACT_KINDS)
    start = start if hasattr(start, "key") else literal(start, UTCDateTime)
    return case(
        (and_(contact, Reminder.due_at < start), "overdue"),
        (contact, "today"),
        (Reminder.kind == ReminderKind.STALLED, "stalled"),
        (Reminder.kind.in_(RECYCLE_KINDS), "recycle"),
        else_="other",
    )


_REMINDER_COLUMNS = (
    Reminder.id, Reminder.kind, Reminder.title, Reminder.body, Reminder.due_at, Reminder.notify_at,
    Reminder.escalated_at, Reminder.user_id, Reminder.customer_id,
)  # fmt: skip


def _visible(end):
    """Open reminders showing by the end of today (recycle notices show as soon as they exist)."""
    end = end if hasattr(end, "key") else literal(end, UTCDateTime)
    return and_(
        Reminder.status == ReminderStatus.OPEN,
        or_(
            func.coalesce(Reminder.notify_at, Reminder.due_at) < end,
            Reminder.kind.in_(RECYCLE_KINDS),
        ),
    )


def _ranked(where, section, partition, limit):
    """Rank and count per section on the reminders alone, then join the customers of the rows shown only
    (a rep's few hundred open reminders are ranked; a few dozen customers are looked up). A customer shows
    once per section (its earliest reminder there): two reminders about one company are one row of work."""
    per_customer = func.coalesce(Reminder.customer_id, -Reminder.id)
    first = (
        select(
            *_REMINDER_COLUMNS,
            Reminder.created_at,
            section.label("section"),
            partition.label("part"),
            func.row_number()
            .over(
                partition_by=(section, Reminder.user_id, per_customer),
                order_by=(Reminder.due_at, Reminder.id),
            )
            .label("crn"),
        )
        .where(where)
        .subquery()
    )
    f = first.c
    order = (f.due_at, f.id)
    ranked = (
        select(
            f.id,
            f.kind,
            f.title,
            f.body,
            f.due_at,
            f.notify_at,
            f.escalated_at,
            f.user_id,
            f.customer_id,
            f.created_at,
            f.section,
            func.row_number().over(partition_by=f.part, order_by=order).label("rn"),
            # Same window (partition and order) as row_number, so the database sorts once.
            func.count().over(partition_by=f.part, order_by=order, rows=(None, None)).label("cnt"),
        )  # fmt: skip
        .where(f.crn == 1)
        .subquery()
    )
    r = ranked.c
    return (
        select(
            r.id,
            r.kind,
            r.title,
            r.body,
            r.due_at,
            r.notify_at,
            r.escalated_at,
            r.user_id,
            r.customer_id,
            Customer.name,
            Customer.grade,
            Customer.phone,
            Customer.wechat,
            Customer.is_hot,
            Customer.last_followup_at,
            r.created_at,
            r.section,
            r.rn,
            r.cnt,
        )  # fmt: skip
        .select_from(ranked)
        .outerjoin(Customer, Customer.id == r.customer_id)
        .where(r.rn <= limit)
        .order_by(r.section, r.rn)
    )


@functools.cache
def _user_statement():
    """The inbox query with bound parameters, built once (constructing it costs more than running it)."""
    start = bindparam("start", type_=UTCDateTime)
    end = bindparam("end", type_=UTCDateTime)
    section = _section_expr(start)
    where = and_(Reminder.user_id == bindparam("uid"), _visible(end))
    return _ranked(where, section, section, bindparam("limit"))


def _item(row, tz) -> Item:
    item = Item(*row[:17])
    item.due_local = item.due_at.astimezone(tz).strftime("%m-%d %H:%M")
    return item


def _fingerprint(rows, start: datetime, now: datetime, tz) -> str:
    digest = hashlib.blake2b(digest_size=10)
    # The local hour too: relative texts ("逾期 5 小时") move on even when no row does.
    digest.update(now.astimezone(tz).strftime("%Y%m%d%H").encode())
    digest.update(start.isoformat().encode())
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def inbox_for(session: Session, user: User, now: datetime, limit: int = LIMIT) -> Inbox:
    """The user's four sections (counts and first ``limit`` items), plus the team's overdue for managers."""
    tz_name = user_tz(user)
    tz = clock.zone(tz_name)
    start, end = clock.local_day_bounds(tz_name, now)
    sections = {key: Section(key) for key in SECTIONS}
    rows = session.execute(
        _user_statement(), {"uid": user.id, "start": start, "end": end, "limit": limit}
    ).all()
    for row in rows:
        key = row.section
        if key not in sections:
            continue
        sections[key].count = row.cnt
        sections[key].items.append(_item(row, tz))
    inbox = Inbox(sections=sections, day_start=start, day_end=end)
    if user.role in (Role.MANAGER, Role.ADMIN):
        inbox.team_overdue = team_overdue(session, user, now, limit=5)
        rows = [*rows, *((r.user_id, r.count, *(i.id for i in r.items)) for r in inbox.team_overdue)]
    inbox.version = _fingerprint(rows, start, now, tz)
    return inbox


def section_items(session: Session, user: User, key: str, now: datetime, limit: int = 500) -> Section:
    """One section in full (the "查看全部" page)."""
    tz = clock.zone(user_tz(user))
    start, end = clock.local_day_bounds(user_tz(user), now)
    section = _section_expr(start)
    where = and_(Reminder.user_id == user.id, _visible(end), section == key)
    result = Section(key)
    for row in session.execute(_ranked(where, section, section, limit)):
        result.count = row.cnt
        result.items.append(_item(row, tz))
    return result


def team_overdue(session: Session, manager: User, now: datetime, limit: int = 5) -> list[TeamRow]:
    """Overdue contact reminders of the people a manager looks after (not their own), per rep."""
    member_ids = team_member_ids(session, manager) - {manager.id}
    if manager.role == Role.ADMIN:
        member_ids = set(session.scalars(select(User.id).where(User.active.is_(True), User.id != manager.id)))
    if not member_ids:
        return []
    start, _end = clock.local_day_bounds(user_tz(manager), now)
    section = literal("overdue")
    where = and_(
        Reminder.user_id.in_(member_ids),
        Reminder.status == ReminderStatus.OPEN,
        Reminder.kind.in_(CONTACT_KINDS),
        Reminder.due_at < literal(start, UTCDateTime),
    )
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(member_ids))).all())
    rows: dict[int, TeamRow] = {}
    tz = clock.zone(user_tz(manager))
    for row in session.execute(_ranked(where, section, Reminder.user_id, limit)):
        item = _item(row, tz)
        item.user_name = names.get(item.user_id)
        team_row = rows.setdefault(
            item.user_id, TeamRow(item.user_id, names.get(item.user_id, ""), row.cnt, [])
        )
        team_row.items.append(item)
    return sorted(rows.values(), key=lambda r: (-r.count, r.user_name))


def counts(inbox: Inbox) -> dict[str, int]:
    return {key: inbox.sections[key].count for key in SECTIONS}
