"""Helpers shared by the recycle tests: rules, instants in Shanghai time, ledger queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from crm.extensions import db
from crm.models import Customer, PoolEvent, RecycleRule

SH = ZoneInfo("Asia/Shanghai")
MINUTE = timedelta(minutes=1)


def sh(*args) -> datetime:
    """An aware instant given in Asia/Shanghai wall time: sh(2026, 3, 14, 10, 0)."""
    return datetime(*args, tzinfo=SH)


def add_rule(pool, kind: str, commit: bool = True, **fields) -> RecycleRule:
    now = sh(2026, 1, 1)
    fields.setdefault("day_kind", "calendar")
    fields.setdefault("position", 0)
    rule = RecycleRule(pool_id=pool.id, kind=kind, created_at=now, updated_at=now, **fields)
    db.session.add(rule)
    if commit:
        db.session.commit()
    return rule


def ledger(customer_id: int | None = None, kind: str | None = None) -> list[PoolEvent]:
    query = select(PoolEvent).order_by(PoolEvent.id)
    if customer_id is not None:
        query = query.where(PoolEvent.customer_id == customer_id)
    if kind is not None:
        query = query.where(PoolEvent.kind == kind)
    return list(db.session.scalars(query))


def count(kind: str) -> int:
    return db.session.scalar(select(func.count()).select_from(PoolEvent).where(PoolEvent.kind == kind))


def fresh(customer: Customer) -> Customer:
    db.session.expire_all()
    return db.session.get(Customer, customer.id)
