"""Recycle rules (回收规则), the holiday calendar, extension requests (延期申请) and sweep runs."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class RuleKind:
    NO_FOLLOWUP = "no_followup"  # N days without a real follow-up (since the later of claim / last touch)
    NO_FIRST_CONTACT = "no_first_contact"  # H hours after claiming without a first contact
    NO_STAGE_PROGRESS = "no_stage_progress"  # N days since the last stage change (or claim)
    NO_DEAL = "no_deal"  # N days after claiming without a won deal
    NURTURE_EXPIRY = "nurture_expiry"  # 长期培育 date passed without a follow-up since it was set
    ALL = (NO_FOLLOWUP, NO_FIRST_CONTACT, NO_STAGE_PROGRESS, NO_DEAL, NURTURE_EXPIRY)
    LABELS = {
        NO_FOLLOWUP: "未跟进",
        NO_FIRST_CONTACT: "领取后未首次联系",
        NO_STAGE_PROGRESS: "阶段无推进",
        NO_DEAL: "未成交",
        NURTURE_EXPIRY: "长期培育到期",
    }


class RecycleRule(db.Model):
    """One rule of a pool. Applies to owned customers whose home pool is ``pool_id``.

    ``grades`` / ``kinds`` narrow it (empty = all). ``day_kind`` counts calendar or working days.
    """

    __tablename__ = "recycle_rules"
    __table_args__ = (Index("ix_recycle_rules_pool", "pool_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    kind: Mapped[str] = mapped_column(String(24))
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hours: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NO_FIRST_CONTACT
    day_kind: Mapped[str] = mapped_column(String(10), default="calendar")  # calendar / working
    grades: Mapped[list] = mapped_column(JSONType, default=list)
    kinds: Mapped[list] = mapped_column(JSONType, default=list)
    warn_days: Mapped[int] = mapped_column(Integer, default=0)
    escalate_days: Mapped[int] = mapped_column(Integer, default=0)
    target_pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id"), nullable=True)
    exclude_protected: Mapped[bool] = mapped_column(Boolean, default=True)
    # Customers with an open opportunity at or past this stage are excluded.
    exclude_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Removed from the pool's list; kept because ledger rows name it (``pool_events.rule_id``).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    pool = relationship("Pool", foreign_keys=[pool_id])
    target_pool = relationship("Pool", foreign_keys=[target_pool_id])


class Holiday(db.Model):
    """A day that differs from the Mon–Fri working week: a public holiday, or a 调休 make-up workday."""

    __tablename__ = "holidays"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, unique=True)
    is_workday: Mapped[bool] = mapped_column(Boolean, default=False)  # True = 调休 make-up workday
    name: Mapped[str] = mapped_column(String(40), default="")


class ExtensionRequest(db.Model):
    """延期申请: an owner asks for +N days on the current holding; a manager decides."""

    __tablename__ = "extension_requests"
    __table_args__ = (Index("ix_extension_requests_status", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    holding_no: Mapped[int] = mapped_column(Integer)
    days: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending / approved / rejected
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    customer = relationship("Customer")
    requester = relationship("User", foreign_keys=[requester_id])
    decided_by = relationship("User", foreign_keys=[decided_by_id])


class SweepRun(db.Model):
    """One run of the recycle sweep: when, as of which instant, how long, what it did, errors."""

    __tablename__ = "sweep_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    warned: Mapped[int] = mapped_column(Integer, default=0)
    escalated: Mapped[int] = mapped_column(Integer, default=0)
    recycled: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="running")  # running / ok / error
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict] = mapped_column(JSONType, default=dict)
