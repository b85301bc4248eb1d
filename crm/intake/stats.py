"""Intake figures for the conflict queue: how often leads collide (撞单) and how often they look alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import DuplicateConflict, EventKind, PoolEvent


@dataclass
class ConflictRate:
    days: int
    arrivals: int  # leads that came in: created + attached duplicates
    created: int
    duplicates: int  # exact duplicates attached to existing customers (撞单)
    possible: int  # new leads flagged as possible duplicates (distinct leads with a conflict)
    open: int

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / self.arrivals if self.arrivals else 0.0

    @property
    def possible_rate(self) -> float:
        return self.possible / self.created if self.created else 0.0

    @property
    def rate(self) -> float:
        """Conflict rate: share of arrivals that were a duplicate or a possible duplicate."""
        return (self.duplicates + self.possible) / self.arrivals if self.arrivals else 0.0


def conflict_rate(session: Session, now: datetime, days: int = 30) -> ConflictRate:
    """Over the last ``days``: arrivals from the ledger, conflicts from the queue (aggregate SQL)."""
    since = now - timedelta(days=days)
    counts = dict(
        session.execute(
            select(PoolEvent.kind, func.count())
            .where(PoolEvent.kind.in_((EventKind.CREATED, EventKind.DUPLICATE)), PoolEvent.at >= since)
            .group_by(PoolEvent.kind)
        ).all()
    )
    possible = session.scalar(
        select(func.count(func.distinct(DuplicateConflict.customer_id))).where(
            DuplicateConflict.created_at >= since
        )
    )
    open_now = session.scalar(
        select(func.count()).select_from(DuplicateConflict).where(DuplicateConflict.status == "open")
    )
    created = counts.get(EventKind.CREATED, 0)
    duplicates = counts.get(EventKind.DUPLICATE, 0)
    return ConflictRate(days, created + duplicates, created, duplicates, possible or 0, open_now or 0)
