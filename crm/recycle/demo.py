"""``seed-demo`` extension: sensible default recycle rules for the demo pools (and the holiday calendar)."""

from __future__ import annotations

import random
from datetime import datetime

from crm.models import RecycleRule, RuleKind
from crm.recycle.calendar import seed_holidays


def seed_demo_rules(session, rng: random.Random, now: datetime, context: dict) -> None:
    """新线索池: 48 h first contact, 7 days follow-up; 华东区域池: 14 days follow-up, 30 days no stage
    progress → 沉默客户池; 沉默客户池: 10 working days follow-up. Every pool allows 长期培育."""
    seed_holidays(session, now)
    pools = context["pools"]
    silent = pools["沉默客户池"].id
    plan = {
        "新线索池": [
            dict(kind=RuleKind.NO_FIRST_CONTACT, hours=48, warn_days=1),
            dict(kind=RuleKind.NO_FOLLOWUP, days=7, warn_days=2, escalate_days=1),
            dict(kind=RuleKind.NURTURE_EXPIRY, warn_days=3),
        ],
        "华东区域池": [
            dict(kind=RuleKind.NO_FOLLOWUP, days=14, warn_days=3, escalate_days=1),
            dict(
                kind=RuleKind.NO_STAGE_PROGRESS, days=30, warn_days=5, escalate_days=2, target_pool_id=silent
            ),
            dict(kind=RuleKind.NURTURE_EXPIRY, warn_days=3),
        ],
        "沉默客户池": [
            dict(kind=RuleKind.NO_FOLLOWUP, days=10, day_kind="working", warn_days=3, escalate_days=1),
            dict(kind=RuleKind.NURTURE_EXPIRY, warn_days=3),
        ],
    }
    for name, rules in plan.items():
        for position, fields in enumerate(rules):
            fields.setdefault("day_kind", "calendar")
            session.add(
                RecycleRule(
                    pool_id=pools[name].id, position=position, created_at=now, updated_at=now, **fields
                )
            )
    session.flush()
