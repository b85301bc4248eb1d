"""The pipeline (阶段即动作): stages, opportunities (商机), quotes, contracts and stage-change history."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class StageRequirement:
    """What entering a stage asks for."""

    NONE = "none"
    FOLLOWUP = "followup"  # a follow-up with a next-contact time
    QUOTE = "quote"  # items, amount, valid until
    CONTRACT = "contract"  # number, amount, signed date, invoice title and tax id
    LOST_REASON = "lost_reason"  # a reason from the configured list
    ALL = (NONE, FOLLOWUP, QUOTE, CONTRACT, LOST_REASON)


class StageKind:
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class Stage(db.Model):
    """A pipeline stage, ordered by ``position``. ``funnel`` buckets it for dashboards."""

    __tablename__ = "stages"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8), default=StageKind.OPEN)
    requirement: Mapped[str] = mapped_column(String(16), default=StageRequirement.NONE)
    # Funnel bucket: lead / communication / intent / deal / lost
    funnel: Mapped[str] = mapped_column(String(16), default="lead")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Opportunity(db.Model):
    """商机: a possible deal with a customer, moving through stages (only via crm.pipeline.services).

    ``status`` open / won / lost follows the stage's kind; ``closed_at`` is set when won or lost (cleared if a
    lost one is reopened); ``amount`` is the expected amount, overwritten by the latest quote and finally by
    the contract amount; ``owner_id`` follows the customer's owner while open."""

    __tablename__ = "opportunities"
    __table_args__ = (
        Index("ix_opportunities_owner_stage", "owner_id", "stage_id"),
        Index("ix_opportunities_customer", "customer_id"),
        Index("ix_opportunities_closed_at", "closed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(120))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2), nullable=True)
    expected_close: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(8), default="open")  # open / won / lost
    lost_reason: Mapped[str | None] = mapped_column(String(60), nullable=True)
    # Was the customer taken from a pool (claim/assign) when this opportunity was created?
    from_pool: Mapped[bool] = mapped_column(Boolean, default=False)
    stage_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    customer = relationship("Customer")
    owner = relationship("User")
    stage = relationship("Stage")


class StageChange(db.Model):
    """One move of a customer or opportunity between stages (a timeline event; dashboards read it).

    ``from_stage_id`` NULL: an opportunity was created (entered its first stage). ``opportunity_id`` NULL: a
    customer-level move of a customer without opportunities (e.g. a lead 新线索 → 初步沟通)."""

    __tablename__ = "stage_changes"
    __table_args__ = (
        Index("ix_stage_changes_customer_at", "customer_id", "at"),
        Index("ix_stage_changes_at", "at"),
        Index("ix_stage_changes_opportunity_at", "opportunity_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"), nullable=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"), nullable=True)
    to_stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    from_stage = relationship("Stage", foreign_keys=[from_stage_id])
    to_stage = relationship("Stage", foreign_keys=[to_stage_id])
    user = relationship("User")
    opportunity = relationship("Opportunity")


class Quote(db.Model):
    """报价: required when entering 已报价."""

    __tablename__ = "quotes"

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id"), index=True)
    items: Mapped[list] = mapped_column(JSONType, default=list)  # [{"name", "qty", "price"}]
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    valid_until: Mapped[date] = mapped_column(Date)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Contract(db.Model):
    """合同: required when entering 成交; starts the customer's protection window."""

    __tablename__ = "contracts"

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id"), index=True)
    number: Mapped[str] = mapped_column(String(60), unique=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    signed_on: Mapped[date] = mapped_column(Date)
    invoice_title: Mapped[str] = mapped_column(String(120))
    tax_id: Mapped[str] = mapped_column(String(30))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
