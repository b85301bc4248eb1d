"""Background tasks (后台任务): one row per long operation run by an rq job — its progress, heartbeat,
result and cancel flag. The page polls this row; the job writes it (microblog's ``Task``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db

from .types import JSONType, UTCDateTime


class TaskStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = (QUEUED, RUNNING)
    FINISHED = (DONE, FAILED, CANCELLED)


class Task(db.Model):
    """A long operation: ``kind`` names its handler (``crm.tasks.registry``), ``params`` its input,
    ``ref`` what it is about (``import:12``) so a page finds its latest task."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_ref", "ref", "id"),
        Index("ix_tasks_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_tasks_owner", "owner_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(12), default=TaskStatus.QUEUED)
    stage: Mapped[str] = mapped_column(String(24), default="")  # what the job is doing now (a message key)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)  # errors so far (bad rows, failed items)
    result: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it failed, for people
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stage_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # for time left
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def active(self) -> bool:
        return self.status in TaskStatus.ACTIVE

    @property
    def percent(self) -> int:
        if self.status == TaskStatus.DONE:
            return 100
        return int(100 * self.done / self.total) if self.total else 0
