"""Settings sections (JSON documents with defaults in code) and the audit of who changed what."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class Setting(db.Model):
    """One settings section, e.g. ``cadence``, ``scoring``, ``frequency_caps``, ``smtp``."""

    __tablename__ = "settings"

    section: Mapped[str] = mapped_column(String(40), primary_key=True)
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class SettingsAudit(db.Model):
    """Who changed which settings (a section, a pool, a pool's rules) from what to what, and when."""

    __tablename__ = "settings_audit"
    __table_args__ = (Index("ix_settings_audit_section_at", "section", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    section: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    before: Mapped[dict | list | None] = mapped_column(JSONType, nullable=True)
    after: Mapped[dict | list | None] = mapped_column(JSONType, nullable=True)
    summary: Mapped[str] = mapped_column(String(300), default="")

    user = relationship("User")
