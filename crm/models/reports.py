"""Daily rollups for the dashboards (看板): derived data only, rebuilt from the ledger and follow-ups by
``crm.reports.rollup`` (idempotent; ``flask --app app crm rollup --rebuild`` starts over)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db

from .types import UTCDateTime


class ReportPoolDaily(db.Model):
    """One local day of one pool for one person and intake channel: flows, timings and follow-ups.

    ``user_id`` 0 means no person (a lead created by intake); ``channel`` "" means none. Sums (seconds)
    rather than averages so days add up.
    """

    __tablename__ = "report_pool_daily"
    __table_args__ = (
        UniqueConstraint("day", "pool_id", "user_id", "channel"),
        Index("ix_report_pool_daily_pool_day", "pool_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)  # local date in the team time zone
    pool_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(60), default="")
    inflow: Mapped[int] = mapped_column(Integer, default=0)
    outflow: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    timed: Mapped[int] = mapped_column(Integer, default=0)  # outflows whose pool entry is known
    in_pool_secs: Mapped[float] = mapped_column(Float, default=0)
    contacted: Mapped[int] = mapped_column(Integer, default=0)  # outflows followed by a first contact
    contact_secs: Mapped[float] = mapped_column(Float, default=0)
    followups: Mapped[int] = mapped_column(Integer, default=0)


class ReportRollup(db.Model):
    """How far a rollup is built: days before ``built_until`` (local, exclusive) are in the table."""

    __tablename__ = "report_rollups"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    built_until: Mapped[date] = mapped_column(Date)
    tz: Mapped[str] = mapped_column(String(64))
    built_at: Mapped[datetime] = mapped_column(UTCDateTime)
