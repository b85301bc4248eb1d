"""Operations: process heartbeats and the last outcome of each background job (系统状态)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db

from .types import UTCDateTime


class OpsHeartbeat(db.Model):
    """A running process (web, worker, scheduler) saying it is alive; one row per process, updated."""

    __tablename__ = "ops_heartbeats"
    __table_args__ = (UniqueConstraint("role", "host", "pid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # web / worker / scheduler
    host: Mapped[str] = mapped_column(String(120))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OpsJob(db.Model):
    """The last run of one kind of background work (a job name, or ``backup``): when, ok or not, what."""

    __tablename__ = "ops_jobs"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
