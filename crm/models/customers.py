"""Customers (客户, including leads 线索), their contacts (联系人) and tags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class Lifecycle:
    LEAD = "lead"  # 线索: not yet converted (一转三)
    CUSTOMER = "customer"  # 客户 (account)
    ALL = (LEAD, CUSTOMER)


class CustomerKind:
    COMPANY = "company"
    PERSON = "person"
    ALL = (COMPANY, PERSON)


customer_tags = Table(
    "customer_tags",
    db.metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
    Index("ix_customer_tags_tag_id", "tag_id"),
)


class Tag(db.Model):
    """A label on customers. ``system`` tags (e.g. 高难度) are set by rules, not typed by users."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    system: Mapped[bool] = mapped_column(Boolean, default=False)
    color: Mapped[str | None] = mapped_column(String(16), nullable=True)


HARD_TAG = "高难度"


class Customer(db.Model):
    """A customer or lead. It is **owned** (``owner_id`` set) or **in its pool** (``owner_id`` empty).

    ``pool_id`` is the home pool: its rules apply while owned, and the customer sits in it while unowned.
    A holding (``holding_no``) starts at each claim/assign and ends at release/recycle/transfer.
    """

    __tablename__ = "customers"
    __table_args__ = (
        # Pool board (crm/pool/board.py): claimable customers of a pool in score order, keyset on
        # (score, id); visible_from is carried so the fair-release filter needs no table access. The
        # filtered variants serve the region / industry / grade filters (bench/pool.py measures them).
        Index(
            "ix_customers_pool_board",
            "pool_id",
            "score",
            "id",
            "visible_from",
            # Carried so a search by name scans this index alone instead of visiting every row.
            "name",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        # Grade combined with region or industry (e.g. A 类华东客户): both equalities lead, then score order.
        Index(
            "ix_customers_pool_grade_region_board",
            "pool_id",
            "grade",
            "region",
            "score",
            "id",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        Index(
            "ix_customers_pool_grade_industry_board",
            "pool_id",
            "grade",
            "industry",
            "score",
            "id",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        Index(
            "ix_customers_pool_region_board",
            "pool_id",
            "region",
            "score",
            "id",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        Index(
            "ix_customers_pool_industry_board",
            "pool_id",
            "industry",
            "score",
            "id",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        Index(
            "ix_customers_pool_grade_board",
            "pool_id",
            "grade",
            "score",
            "id",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        # Fair release: the few customers still waiting for their release time (pool list counts).
        Index(
            "ix_customers_pool_waiting",
            "pool_id",
            "visible_from",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL AND visible_from IS NOT NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL AND visible_from IS NOT NULL"),
        ),
        # 今日新进: customers that entered the pool since the start of the local day.
        Index(
            "ix_customers_pool_entered",
            "pool_id",
            "pool_entered_at",
            postgresql_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
            sqlite_where=text("owner_id IS NULL AND merged_into_id IS NULL"),
        ),
        # Owned customers only: an index over every row would tempt SQLite's planner to read all the
        # unowned rows (owner_id IS NULL) through it instead of the pool board's partial index.
        Index(
            "ix_customers_owner_score",
            "owner_id",
            "score",
            postgresql_where=text("owner_id IS NOT NULL"),
            sqlite_where=text("owner_id IS NOT NULL"),
        ),
        Index(
            "ix_customers_owner_claimed",
            "owner_id",
            "claimed_at",
            postgresql_where=text("owner_id IS NOT NULL"),
            sqlite_where=text("owner_id IS NOT NULL"),
        ),
        Index("ix_customers_phone_key", "phone_key"),
        Index("ix_customers_email_key", "email_key"),
        Index("ix_customers_wechat_key", "wechat_key"),
        Index("ix_customers_name_key", "name_key"),
        Index("ix_customers_arrived_at", "arrived_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    name_key: Mapped[str] = mapped_column(String(120), default="")  # normalised company name (dedupe)
    kind: Mapped[str] = mapped_column(String(16), default=CustomerKind.COMPANY)
    lifecycle: Mapped[str] = mapped_column(String(16), default=Lifecycle.LEAD)

    # Primary contact, kept on the customer so leads need no contact row until converted.
    contact_name: Mapped[str | None] = mapped_column(String(60), nullable=True)
    job_title: Mapped[str | None] = mapped_column(String(60), nullable=True)
    job_level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(40), nullable=True)
    phone_key: Mapped[str | None] = mapped_column(String(20), nullable=True)  # E.164
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    email_key: Mapped[str | None] = mapped_column(String(254), nullable=True)
    wechat: Mapped[str | None] = mapped_column(String(60), nullable=True)
    wechat_key: Mapped[str | None] = mapped_column(String(60), nullable=True)
    address: Mapped[str | None] = mapped_column(String(200), nullable=True)

    region: Mapped[str | None] = mapped_column(String(40), nullable=True)
    industry: Mapped[str | None] = mapped_column(String(40), nullable=True)
    company_size: Mapped[int | None] = mapped_column(Integer, nullable=True)  # employees
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)

    # Intake
    source: Mapped[str | None] = mapped_column(String(40), nullable=True)  # api / form / import / manual
    channel: Mapped[str | None] = mapped_column(String(60), nullable=True)  # 公众号 / 投放 / 展会 …
    campaign: Mapped[str | None] = mapped_column(String(80), nullable=True)
    utm: Mapped[dict] = mapped_column(JSONType, default=dict)
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Scoring
    score: Mapped[int] = mapped_column(Integer, default=0)
    grade: Mapped[str] = mapped_column(String(1), default="C")
    score_breakdown: Mapped[dict] = mapped_column(JSONType, default=dict)
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    is_hot: Mapped[bool] = mapped_column(Boolean, default=False)  # above the hot threshold (crossing state)
    win_probability: Mapped[float | None] = mapped_column(Float, nullable=True)

    # Pipeline
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"), nullable=True)
    last_stage_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    won_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # last deal signed

    # Ownership and pool
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id"), nullable=True, index=True)
    holding_no: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # current holding start
    first_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # in this holding
    last_followup_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # last real touch
    holding_followups: Mapped[int] = mapped_column(Integer, default=0)  # real follow-ups this holding
    pool_entered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Fair release: hidden on the board until this instant.
    visible_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # users.id, deliberately without a foreign key: users are never deleted (deactivated), the value is always
    # copied from owner_id, and the recycle sweep sets it on ~100k rows at once, where the per-row FK check
    # cost ~1 s on PostgreSQL (issue 5, Speed).
    last_owner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    senior_only: Mapped[bool] = mapped_column(Boolean, default=False)

    # Recycle exemptions and pauses
    protected_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # 锁定: no recycle rule takes a locked customer back; the lock ends with the holding (crm/pool/lock.py).
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locked_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nurture_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    nurture_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Approved extension days (延期) for the current holding, added to every rule's due time.
    extension_days: Mapped[int] = mapped_column(Integer, default=0)

    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    owner = relationship("User", foreign_keys=[owner_id])
    last_owner = relationship("User", primaryjoin="foreign(Customer.last_owner_id) == User.id", viewonly=True)
    pool = relationship("Pool", foreign_keys=[pool_id])
    stage = relationship("Stage", foreign_keys=[stage_id])
    tags: Mapped[list[Tag]] = relationship(secondary=customer_tags, order_by="Tag.name")
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer", order_by="Contact.id")

    def __repr__(self) -> str:
        return f"<Customer {self.id} {self.name}>"


class Contact(db.Model):
    """联系人: a person at a customer, with normalised keys for de-duplication."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_phone_key", "phone_key"),
        Index("ix_contacts_email_key", "email_key"),
        Index("ix_contacts_wechat_key", "wechat_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    job_title: Mapped[str | None] = mapped_column(String(60), nullable=True)
    job_level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(40), nullable=True)
    phone_key: Mapped[str | None] = mapped_column(String(20), nullable=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    email_key: Mapped[str | None] = mapped_column(String(254), nullable=True)
    wechat: Mapped[str | None] = mapped_column(String(60), nullable=True)
    wechat_key: Mapped[str | None] = mapped_column(String(60), nullable=True)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    customer: Mapped[Customer] = relationship(back_populates="contacts")


class NameGram(db.Model):
    """Blocking keys for fuzzy company matching: each customer's normalised-name bigrams.

    A fuzzy check looks up candidates sharing rare grams instead of scanning every customer.

    ``customer_id`` has no foreign key: grams are derived rows, written with each new customer (an API
    lead writes ~20) and dropped with it or on merge (``grams.drop_grams``); a foreign key's per-row check
    cost more than the rest of the gram write on PostgreSQL. Readers join ``customers``, so a stray gram
    could only ever find nothing.
    """

    __tablename__ = "name_grams"
    __table_args__ = (UniqueConstraint("gram", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gram: Mapped[str] = mapped_column(String(8))
    customer_id: Mapped[int] = mapped_column(Integer, index=True)


class Activity(db.Model):
    """A timeline item that is neither a follow-up nor a ledger move: a duplicate lead attached (撞单),
    a field edit, a score crossing, a note. Stage changes live in ``StageChange``."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_customer_at", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(30))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict] = mapped_column(JSONType, default=dict)

    user = relationship("User")
