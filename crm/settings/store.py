"""Settings sections: defaults declared in code by each feature, overrides stored as JSON rows.

``register(section, defaults, validate)`` once at import time; ``get(session, section)`` merges the
stored document over the defaults; ``put(...)`` validates, saves and writes a ``SettingsAudit`` row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy.orm import Session

from crm.models import Setting, SettingsAudit, User


class SettingsError(ValueError):
    """Invalid settings; ``errors`` maps a field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class Section:
    name: str
    label: str
    defaults: dict
    # Returns the cleaned document or raises SettingsError.
    validate: Callable[[dict], dict] | None


SECTIONS: dict[str, Section] = {}


def register(name: str, label: str, defaults: dict, validate: Callable[[dict], dict] | None = None) -> None:
    SECTIONS[name] = Section(name, label, defaults, validate)


def _section(name: str) -> Section:
    if name not in SECTIONS:
        raise KeyError(name)
    return SECTIONS[name]


def get(session: Session, name: str) -> dict:
    """The effective settings of a section: stored values over defaults (a fresh copy)."""
    section = _section(name)
    merged = copy.deepcopy(section.defaults)
    row = session.get(Setting, name)
    if row is not None and row.data:
        merged.update(copy.deepcopy(row.data))
    return merged


def put(session: Session, name: str, data: dict, user: User | None, now: datetime, summary: str = "") -> dict:
    """Validate and store a section (unknown keys refused); audited. Returns the effective settings."""
    section = _section(name)
    unknown = sorted(set(data) - set(section.defaults))
    if unknown:
        raise SettingsError({key: _("未知设置项。") for key in unknown})
    candidate = get(session, name) | data
    cleaned = section.validate(candidate) if section.validate else candidate
    before = get(session, name)
    row = session.get(Setting, name)
    if row is None:
        row = Setting(section=name, data={}, updated_at=now)
        session.add(row)
    row.data = cleaned
    row.updated_at = now
    row.updated_by_id = user.id if user else None
    session.add(
        SettingsAudit(
            at=now,
            user_id=user.id if user else None,
            section=name,
            before=before,
            after=cleaned,
            summary=summary or _("修改了 %(label)s", label=section.label),
        )
    )
    session.flush()
    return get(session, name)


def audit(
    session: Session,
    section: str,
    user: User | None,
    now: datetime,
    before,
    after,
    summary: str,
    object_id: int | None = None,
) -> None:
    """Record a settings change made outside a section (a pool, its rules, holidays)."""
    session.add(
        SettingsAudit(
            at=now,
            user_id=user.id if user else None,
            section=section,
            object_id=object_id,
            before=before,
            after=after,
            summary=summary,
        )
    )
