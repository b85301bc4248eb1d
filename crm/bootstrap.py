"""Rows every database needs: default levels and pipeline stages (and what features add)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import Level, Stage, StageKind, StageRequirement

DEFAULT_LEVELS = [
    # name, holding cap (保有量), senior, rank
    ("初级销售", 20, False, 1),
    ("高级销售", 30, True, 2),
    ("销售主管", 40, True, 3),
]

DEFAULT_STAGES = [
    # name, kind, requirement, funnel bucket
    ("新线索", StageKind.OPEN, StageRequirement.NONE, "lead"),
    ("初步沟通", StageKind.OPEN, StageRequirement.FOLLOWUP, "communication"),
    ("有意向", StageKind.OPEN, StageRequirement.FOLLOWUP, "intent"),
    ("已报价", StageKind.OPEN, StageRequirement.QUOTE, "intent"),
    ("谈判中", StageKind.OPEN, StageRequirement.FOLLOWUP, "intent"),
    ("成交", StageKind.WON, StageRequirement.CONTRACT, "deal"),
    ("输单", StageKind.LOST, StageRequirement.LOST_REASON, "lost"),
]

# Features append functions (session, now) that create their own default rows, idempotently.
EXTRA_DEFAULTS: list[Callable[[Session, datetime], None]] = []


def ensure_defaults(session: Session, now: datetime) -> None:
    """Create default levels and stages when none exist; safe to run again."""
    if not session.scalar(select(func.count()).select_from(Level)):
        for name, cap, senior, rank in DEFAULT_LEVELS:
            session.add(Level(name=name, holding_cap=cap, is_senior=senior, rank=rank))
    if not session.scalar(select(func.count()).select_from(Stage)):
        for position, (name, kind, requirement, funnel) in enumerate(DEFAULT_STAGES, start=1):
            session.add(
                Stage(name=name, position=position, kind=kind, requirement=requirement, funnel=funnel)
            )
    session.flush()
    for extra in EXTRA_DEFAULTS:
        extra(session, now)
    session.flush()


# Recycle engine (issue 5): the mainland China holiday calendar (2026, 2027 statutory days) and the 高难度 tag.
def _recycle_defaults(session: Session, now: datetime) -> None:
    from crm.recycle.calendar import seed_holidays
    from crm.recycle.sweep import hard_tag_id

    seed_holidays(session, now)
    hard_tag_id(session)


EXTRA_DEFAULTS.append(_recycle_defaults)
