"""The customer timeline (时间线): one list, newest first, merging follow-ups, activities, stage changes and
ledger moves (流转记录) of a customer and of every customer merged into it, so whoever claims it next sees
everything that happened before.

Pagination is a keyset on (at, source rank, id): each source is read with its ``(customer_id, at)`` index,
at most one page per source, and the pages are merged in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from crm import clock
from crm.models import Activity, Customer, EventKind, FollowUp, PoolEvent, StageChange

PAGE_SIZE = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Higher rank first when two items share a timestamp (a claim before the follow-up made in the same second).
SOURCES = {
    "ledger": (PoolEvent, 4),
    "stage": (StageChange, 3),
    "activity": (Activity, 2),
    "followup": (FollowUp, 1),
}

EVENT_LABELS = {
    EventKind.CREATED: "进入系统",
    EventKind.CLAIMED: "领取",
    EventKind.ASSIGNED: "分配",
    EventKind.AUTO_ASSIGNED: "自动分配",
    EventKind.TRANSFERRED: "转移",
    EventKind.RELEASED: "退回公海",
    EventKind.RECYCLED: "回收到公海",
    EventKind.WARNED: "回收预警",
    EventKind.ESCALATED: "预警升级至主管",
    EventKind.EXTENSION_REQUESTED: "申请延期",
    EventKind.EXTENDED: "延期通过",
    EventKind.EXTENSION_REJECTED: "延期被拒",
    EventKind.RECLAIMED: "原负责人重新领取",
    EventKind.MERGED: "合并",
    EventKind.PROTECTED: "设为保护",
    EventKind.NURTURED: "长期培育",
    EventKind.LOCKED: "锁定",
    EventKind.UNLOCKED: "解除锁定",
    EventKind.MOVED: "移到其他公海",
    EventKind.DUPLICATE: "撞单",
}


@dataclass
class TimelineItem:
    source: str  # ledger / stage / activity / followup
    at: datetime
    id: int
    obj: object
    customer_id: int

    @property
    def key(self) -> tuple:
        return (self.at, SOURCES[self.source][1], self.id)


def related_ids(session: Session, customer: Customer) -> list[int]:
    """The customer and every customer merged into it (directly or through an earlier merge)."""
    ids = [customer.id]
    frontier = [customer.id]
    while frontier and len(ids) < 1000:
        frontier = list(session.scalars(select(Customer.id).where(Customer.merged_into_id.in_(frontier))))
        frontier = [i for i in frontier if i not in ids]
        ids += frontier
    return ids


def parse_cursor(text: str | None) -> tuple[datetime, int, int] | None:
    """``"1772330400000000~4~123"`` (microseconds since the epoch, source rank, id) → (at, rank, id);
    malformed → None (first page). The cursor is URL-safe as it is."""
    if not text:
        return None
    parts = text.split("~")
    if len(parts) != 3:
        return None
    try:
        micros, rank, item_id = (int(p) for p in parts)
        at = EPOCH + timedelta(microseconds=micros)
    except (ValueError, OverflowError):
        return None
    return at, rank, item_id


def encode_cursor(item: TimelineItem) -> str:
    micros = (clock.as_utc(item.at) - EPOCH) // timedelta(microseconds=1)
    return f"{micros}~{SOURCES[item.source][1]}~{item.id}"


def _after_cursor(model, rank: int, cursor: tuple[datetime, int, int] | None):
    if cursor is None:
        return None
    at, c_rank, c_id = cursor
    if rank < c_rank:
        return model.at <= at
    if rank > c_rank:
        return model.at < at
    return or_(model.at < at, and_(model.at == at, model.id < c_id))


def _options(source: str) -> list:
    if source == "ledger":
        return [
            selectinload(PoolEvent.actor),
            selectinload(PoolEvent.from_user),
            selectinload(PoolEvent.to_user),
            selectinload(PoolEvent.pool),
            selectinload(PoolEvent.to_pool),
        ]
    if source == "stage":
        return [
            selectinload(StageChange.from_stage),
            selectinload(StageChange.to_stage),
            selectinload(StageChange.user),
        ]
    return [selectinload(SOURCES[source][0].user)]


def timeline_page(
    session: Session,
    customer: Customer,
    cursor: tuple[datetime, int, int] | None = None,
    limit: int = PAGE_SIZE,
) -> tuple[list[TimelineItem], str | None]:
    """One page of the merged timeline, newest first, and the cursor of the next page (None at the end)."""
    ids = related_ids(session, customer)
    items: list[TimelineItem] = []
    for source, (model, rank) in SOURCES.items():
        stmt = select(model).where(model.customer_id.in_(ids))
        condition = _after_cursor(model, rank, cursor)
        if condition is not None:
            stmt = stmt.where(condition)
        stmt = stmt.options(*_options(source)).order_by(model.at.desc(), model.id.desc()).limit(limit + 1)
        items += [TimelineItem(source, row.at, row.id, row, row.customer_id) for row in session.scalars(stmt)]
    items.sort(key=lambda item: item.key, reverse=True)
    page = items[:limit]
    next_cursor = encode_cursor(page[-1]) if len(items) > limit and page else None
    return page, next_cursor


def event_label(kind: str) -> str:
    return _(EVENT_LABELS.get(kind, kind))


def ledger_json(event: PoolEvent) -> dict:
    """A ledger row as data (API timeline): who, from, to, pool, reason, note, follow-ups, result."""
    return {
        "kind": event.kind,
        "label": event_label(event.kind),
        "actor": event.actor.name if event.actor else None,
        "actor_id": event.actor_id,
        "actor_system": event.actor_system,
        "from_user": event.from_user.name if event.from_user else None,
        "from_user_id": event.from_user_id,
        "to_user": event.to_user.name if event.to_user else None,
        "to_user_id": event.to_user_id,
        "pool": event.pool.name if event.pool else None,
        "pool_id": event.pool_id,
        "to_pool": event.to_pool.name if event.to_pool else None,
        "to_pool_id": event.to_pool_id,
        "reason": event.reason,
        "note": event.note,
        "holding_followups": event.holding_followups,
        "holding_no": event.holding_no,
        "result": event.result,
        "data": event.data,
    }


def item_json(item: TimelineItem) -> dict:
    """Any timeline item as data for ``GET /api/v1/customers/<id>/timeline``."""
    obj = item.obj
    base = {"type": item.source, "id": item.id, "at": item.at.isoformat(), "customer_id": item.customer_id}
    if item.source == "ledger":
        return base | ledger_json(obj)
    if item.source == "followup":
        return base | {
            "user": obj.user.name if obj.user else None,
            "user_id": obj.user_id,
            "channel": obj.channel,
            "content": obj.content,
            "goal_met": obj.goal_met,
            "next_plan": obj.next_plan,
            "next_contact_at": obj.next_contact_at.isoformat() if obj.next_contact_at else None,
            "is_fake": obj.is_fake,
            "holding_no": obj.holding_no,
        }
    if item.source == "stage":
        return base | {
            "user": obj.user.name if obj.user else None,
            "from_stage": obj.from_stage.name if obj.from_stage else None,
            "to_stage": obj.to_stage.name if obj.to_stage else None,
            "opportunity_id": obj.opportunity_id,
            "note": obj.note,
        }
    return base | {
        "kind": obj.kind,
        "user": obj.user.name if obj.user else None,
        "title": obj.title,
        "body": obj.body,
        "data": obj.data,
    }
