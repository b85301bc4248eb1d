"""Lead intake: import batches, the duplicate conflict queue (撞单), behaviour events, public web forms."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class ImportBatch(db.Model):
    """One Excel/CSV import: who, which file (hash), mapping, counts and the per-row errors."""

    __tablename__ = "import_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id"), nullable=True)
    filename: Mapped[str] = mapped_column(String(200))
    file_hash: Mapped[str] = mapped_column(String(64), index=True)
    mapping: Mapped[dict] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(
        String(12), default="preview"
    )  # preview/importing/imported/failed/cancelled
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_created: Mapped[int] = mapped_column(Integer, default=0)
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_error: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list] = mapped_column(JSONType, default=list)  # [{"row", "column", "reason"}]
    # Good rows already imported (committed with them): a resumed import starts after them.
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    # The first customer this batch created: later chunks compare names only with older customers.
    first_customer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DuplicateConflict(db.Model):
    """A possible duplicate pair for an admin to merge or mark distinct (never asked again)."""

    __tablename__ = "duplicate_conflicts"
    __table_args__ = (
        UniqueConstraint("customer_id", "candidate_id"),
        Index("ix_duplicate_conflicts_status", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))  # the newer record
    candidate_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))  # the existing one it resembles
    similarity: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(10), default="open")  # open / merged / distinct
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    customer = relationship("Customer", foreign_keys=[customer_id])
    candidate = relationship("Customer", foreign_keys=[candidate_id])


class PendingDuplicateCheck(db.Model):
    """A new lead whose possible-duplicate check (similar company names) runs in the background: written
    with the lead, in its transaction, and deleted by the check (``intake.services``). Leads of one intake
    call share ``group_id`` (the first one's id): they are checked together, as at intake.

    No foreign key: the check skips ids that are gone or merged, and the row is written in the lead's own
    statement on PostgreSQL."""

    __tablename__ = "pending_duplicate_checks"

    customer_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    group_id: Mapped[int] = mapped_column(Integer)


class BehaviorEvent(db.Model):
    """A scoring behaviour event (email_open / ad_click / download / form_submit / page_view)."""

    __tablename__ = "behavior_events"
    __table_args__ = (Index("ix_behavior_events_customer_at", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
    # Caller-supplied id so a retried POST is recorded once.
    external_id: Mapped[str | None] = mapped_column(String(80), nullable=True, unique=True)


class LeadForm(db.Model):
    """An embeddable public web form for a pool / campaign, reached at ``/f/<slug>``."""

    __tablename__ = "lead_forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(60))
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    campaign: Mapped[str | None] = mapped_column(String(80), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(60), nullable=True)
    thank_you: Mapped[str] = mapped_column(Text, default="感谢您的留言,我们会尽快与您联系。")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Added by intake: a line shown above the form, and which optional fields it asks for
    # (company, email, wechat, job_title, notes); name and phone are always asked.
    intro: Mapped[str | None] = mapped_column(Text, nullable=True)
    fields: Mapped[list] = mapped_column(JSONType, default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)

    pool = relationship("Pool")


class RateLimitHit(db.Model):
    """A hit against a named rate limit (public form per address …), counted over a sliding window."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(120))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class UsedFormToken(db.Model):
    """A public-form token that has been posted once (its nonce's SHA-256): a token is good for one post.
    Rows older than the token lifetime are purged with the rate-limit hits."""

    __tablename__ = "used_form_tokens"

    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    form_id: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class NameGramStat(db.Model):
    """How many customers carry each name gram: the fuzzy check reads the rarest grams first.

    Incremented when grams are written; recomputed set-based nightly (merges and renames drift it).
    Only an ordering hint: candidate look-ups are bounded whatever it says.
    """

    __tablename__ = "name_gram_stats"

    gram: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
