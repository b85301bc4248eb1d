"""Pools (公海池), their members and admins, and the append-only ledger of moves (流转记录)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class PrevOwnerRule:
    """What the previous owner of a recycled/released customer may do."""

    NONE = "none"
    COOLDOWN = "cooldown"  # the last owner may not reclaim for N days
    PRIORITY = "priority"  # for N days only the last owner may reclaim
    ALL = (NONE, COOLDOWN, PRIORITY)


class AssignStrategy:
    NONE = "none"
    ROUND_ROBIN = "round_robin"
    LOAD_BALANCE = "load_balance"
    MATCH = "match"  # region / industry skill match, then load balance
    ALL = (NONE, ROUND_ROBIN, LOAD_BALANCE, MATCH)


class Pool(db.Model):
    """A public customer pool. Customers whose ``pool_id`` is this pool and have no owner sit in it."""

    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Purpose, e.g. lead / intent / silent / region; informative and used by intake for "the lead pool".
    kind: Mapped[str] = mapped_column(String(20), default="general")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    daily_claim_limit: Mapped[int] = mapped_column(Integer, default=3)
    prev_owner_rule: Mapped[str] = mapped_column(String(16), default=PrevOwnerRule.COOLDOWN)
    prev_owner_days: Mapped[int] = mapped_column(Integer, default=7)
    mask_contacts: Mapped[bool] = mapped_column(Boolean, default=True)
    auto_assign_strategy: Mapped[str] = mapped_column(String(16), default=AssignStrategy.NONE)
    # Round-robin position: id of the user assigned last; updated with a conditional update.
    rr_last_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # Fair release: recycled customers become visible at these local times ("10:00", "15:00").
    fair_release: Mapped[bool] = mapped_column(Boolean, default=False)
    release_times: Mapped[list] = mapped_column(JSONType, default=list)
    nurture_max_days: Mapped[int] = mapped_column(Integer, default=90)
    # 长期培育 allowed in this pool (up to nurture_max_days); its expiry is built in (a 长期培育到期 rule is
    # kept for the pool while nurture is allowed).
    nurture_allowed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Embargo (Cordys): customers entering the pool (new or recycled) are claimable N hours after they enter.
    embargo_hours: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    region: Mapped[str | None] = mapped_column(String(40), nullable=True)
    industry: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    members: Mapped[list[PoolMember]] = relationship(back_populates="pool", cascade="all, delete-orphan")
    admins: Mapped[list[PoolAdmin]] = relationship(back_populates="pool", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<Pool {self.id} {self.name}>"


class PoolMember(db.Model):
    """Who may see and claim from a pool: one user, or a whole team."""

    __tablename__ = "pool_members"
    __table_args__ = (
        UniqueConstraint("pool_id", "user_id"),
        UniqueConstraint("pool_id", "team_id"),
        CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)", name="user_xor_team"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), nullable=True, index=True)

    pool: Mapped[Pool] = relationship(back_populates="members")


class PoolAdmin(db.Model):
    """A pool admin may assign from the pool and edit its settings and rules."""

    __tablename__ = "pool_admins"
    __table_args__ = (UniqueConstraint("pool_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)

    pool: Mapped[Pool] = relationship(back_populates="admins")


class EventKind:
    """Kinds of ledger rows (SPEC §2)."""

    CREATED = "created"
    CLAIMED = "claimed"
    ASSIGNED = "assigned"
    AUTO_ASSIGNED = "auto_assigned"
    TRANSFERRED = "transferred"
    RELEASED = "released"
    RECYCLED = "recycled"
    WARNED = "warned"
    ESCALATED = "escalated"
    EXTENSION_REQUESTED = "extension_requested"
    EXTENDED = "extended"
    EXTENSION_REJECTED = "extension_rejected"
    RECLAIMED = "reclaimed"
    MERGED = "merged"
    PROTECTED = "protected"
    NURTURED = "nurtured"
    MOVED = "moved"  # moved between pools while unowned
    DUPLICATE = "duplicate"  # a duplicate lead attached (撞单)
    LOCKED = "locked"  # 锁定: the owner locked it against recycling
    UNLOCKED = "unlocked"
    ALL = (
        CREATED, CLAIMED, ASSIGNED, AUTO_ASSIGNED, TRANSFERRED, RELEASED, RECYCLED, WARNED, ESCALATED,
        EXTENSION_REQUESTED, EXTENDED, EXTENSION_REJECTED, RECLAIMED, MERGED, PROTECTED, NURTURED, MOVED,
        DUPLICATE, LOCKED, UNLOCKED,
    )  # fmt: skip


class PoolEvent(db.Model):
    """流转记录: one append-only ledger row per move. Database triggers refuse UPDATE and DELETE.

    ``dedupe_key`` makes "exactly once" moves idempotent (e.g. ``recycle:<customer>:<holding>``).

    No column is a foreign key, on purpose: a recycle sweep writes ~100k ledger rows at once, where each
    foreign key costs a per-row check (on PostgreSQL a trigger, an index probe and a row lock on the
    referenced row) — the bulk of the sweep's time (issue 5, Speed). ``customer_id`` is checked by triggers
    instead (``ledger_guard``: on PostgreSQL once per statement): it must name a customer, and a customer
    with a ledger cannot be deleted. The other references (users, pools, rules) name rows that are never
    deleted (users are deactivated, pools and rules soft-deleted), and every writer takes the ids from live
    rows. The relationships below are view-only joins.
    """

    __tablename__ = "pool_events"
    __table_args__ = (
        Index("ix_pool_events_customer_at", "customer_id", "at"),
        # to_user_id carried for the dashboards' "new customers per rep" (crm/reports), an index-only scan.
        Index("ix_pool_events_kind_at", "kind", "at", "to_user_id"),
        Index("ix_pool_events_pool_at", "pool_id", "at"),
        Index("ix_pool_events_to_user_kind_at", "to_user_id", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer)  # customers.id, checked by triggers (see above)
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # users.id, no FK (see above)
    # When the system acted: the rule or job that fired, e.g. "rule:12 7天未跟进" or "auto_assign".
    actor_system: Mapped[str | None] = mapped_column(String(120), nullable=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # recycle_rules.id, no FK (see above)
    from_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # users.id, no FK (see above)
    to_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # users.id, no FK (see above)
    pool_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # pools.id, no FK (see above)
    to_pool_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # pools.id, no FK (see above)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Follow-ups the customer got during the holding that this move ends.
    holding_followups: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The holding (Customer.holding_no) this row belongs to.
    holding_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(120), nullable=True, unique=True)

    actor = relationship("User", primaryjoin="foreign(PoolEvent.actor_id) == User.id", viewonly=True)
    from_user = relationship("User", primaryjoin="foreign(PoolEvent.from_user_id) == User.id", viewonly=True)
    to_user = relationship("User", primaryjoin="foreign(PoolEvent.to_user_id) == User.id", viewonly=True)
    pool = relationship("Pool", primaryjoin="foreign(PoolEvent.pool_id) == Pool.id", viewonly=True)
    to_pool = relationship("Pool", primaryjoin="foreign(PoolEvent.to_pool_id) == Pool.id", viewonly=True)


class ClaimCount(db.Model):
    """Claims a user made from a pool on one local day; the daily limit is a conditional increment here.

    Releasing does not decrement it (a release cannot dodge the limit).
    """

    __tablename__ = "claim_counts"
    __table_args__ = (UniqueConstraint("user_id", "pool_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    day: Mapped[date] = mapped_column(Date)  # local date in the team's time zone
    count: Mapped[int] = mapped_column(Integer, default=0)
