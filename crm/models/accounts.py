"""People: users (销售/主管/管理员), teams, levels (职级) with holding caps, API tokens, login attempts."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class Role:
    """Roles in increasing power; a route allowed to ``rep`` is allowed to every signed-in user."""

    REP = "rep"
    MANAGER = "manager"
    ADMIN = "admin"
    ALL = (REP, MANAGER, ADMIN)
    RANK = {REP: 1, MANAGER: 2, ADMIN: 3}
    LABELS = {REP: "销售", MANAGER: "主管", ADMIN: "管理员"}


class Level(db.Model):
    """职级: sets the holding cap (保有量). ``is_senior`` levels may claim senior-only (高难度) customers."""

    __tablename__ = "levels"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    holding_cap: Mapped[int] = mapped_column(Integer, default=20)
    # 锁定客户 (悟空CRM): how many held customers a user of this level may lock against recycling.
    lock_quota: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_senior: Mapped[bool] = mapped_column(Boolean, default=False)
    rank: Mapped[int] = mapped_column(Integer, default=0)


class Team(db.Model):
    """A sales team with its manager; claim limits count days in the team's time zone."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", use_alter=True), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)

    manager: Mapped[User | None] = relationship(foreign_keys=[manager_id], post_update=True)
    members: Mapped[list[User]] = relationship(back_populates="team", foreign_keys="User.team_id")


class User(UserMixin, db.Model):
    """A person who signs in. Deactivated users (离职) keep their history but cannot sign in."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(60))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.REP)
    level_id: Mapped[int | None] = mapped_column(ForeignKey("levels.id"), nullable=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), nullable=True)
    # Explicit manager; when empty the team's manager is the user's manager.
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    away_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Auto-assign "match" strategy: regions and industries this rep is good at.
    regions: Mapped[list] = mapped_column(JSONType, default=list)
    skills: Mapped[list] = mapped_column(JSONType, default=list)
    locale: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # Notification preferences: {"channels": ["in_app", "email", ...], "quiet_start": "22:00", "quiet_end": "08:00"}
    notify_prefs: Mapped[dict] = mapped_column(JSONType, default=dict)
    # Secret calendar feed URL token (hashed); rotating it revokes the old URL.
    ics_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    # Bumped on password reset / deactivation (sign-ins themselves are ``UserSession`` rows).
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    # Bumped first thing in a claim/assign transaction: a row lock that serialises one user's claims,
    # so the holding cap and daily limit hold under concurrency (PostgreSQL row lock, SQLite write lock).
    claim_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    level: Mapped[Level | None] = relationship()
    team: Mapped[Team | None] = relationship(back_populates="members", foreign_keys=[team_id])
    manager: Mapped[User | None] = relationship(remote_side=[id], foreign_keys=[manager_id])

    @property
    def is_active(self) -> bool:  # Flask-Login: inactive users cannot stay signed in
        return bool(self.active)

    def has_role(self, role: str) -> bool:
        return Role.RANK.get(self.role, 0) >= Role.RANK[role]

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_manager(self) -> bool:
        return self.role in (Role.MANAGER, Role.ADMIN)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role}>"


class ApiToken(db.Model):
    """A bearer token for ``/api/v1``. Only its SHA-256 is stored; ``prefix`` lets users tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    # Space-separated scopes, e.g. "read write leads admin".
    scopes: Mapped[str] = mapped_column(String(200), default="read write")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()


class UserSession(db.Model):
    """One sign-in (登录会话) of one browser. The session cookie and the remember-me cookie carry a random key;
    only its SHA-256 is stored. Signing out revokes the row; a password change or deactivation revokes all
    of the user's rows; every row ends at ``expires_at`` whatever the cookies say."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    remember: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(200), nullable=True)

    user: Mapped[User] = relationship()


class LoginAttempt(db.Model):
    """One sign-in attempt, for throttling (5 failures in 15 minutes per account or address)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_at", "email", "at"),
        Index("ix_login_attempts_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    success: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
