"""``seed-demo`` for intake and scoring: keys and name grams of the demo customers, behaviour events,
real scores from the points model, one 撞单 on an owned customer, two open conflicts, a web form.

The final rescore is queued to run after every other feature's seeder (opportunities and follow-ups
they add count towards deal and interaction points and the win probability).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import select, update

from crm.demo import EXTRA_SEEDERS
from crm.intake import grams
from crm.intake.services import LeadData, intake, lead_pool
from crm.models import BehaviorEvent, Customer, FollowUp, LeadForm
from crm.scoring.config import EVENT_TYPES


def seed_intake(session, rng: random.Random, now: datetime, context: dict) -> None:
    customers: list[Customer] = context["customers"]
    session.flush()
    # The key hooks fill keys of new rows; this covers rows written before they were installed.
    for customer in customers:
        if not customer.name_key:
            customer.name = customer.name  # marks it dirty: the flush hook computes name_key and grams
    session.flush()
    events = []
    for customer in customers:
        engaged = rng.random()
        if engaged < 0.55:
            continue
        if engaged >= 0.93:  # very interested this week: asked twice, downloaded the price list
            kinds = ["form_submit", "form_submit", "download", "download", "page_view", "email_open"]
            span = 4
        else:
            n = rng.randint(1, 3) if engaged < 0.85 else rng.randint(5, 12)
            kinds = rng.choices(EVENT_TYPES, weights=[4, 2, 2, 1, 6], k=n)
            span = 60 if engaged < 0.85 else 14
        for kind in kinds:
            at = now - timedelta(days=rng.uniform(0, span), minutes=rng.randrange(600))
            events.append(BehaviorEvent(customer_id=customer.id, type=kind, at=at, data={}))
    session.add_all(events)
    pools = context["pools"]
    lead = pools.get("新线索池") or lead_pool(session, now)
    if not session.scalar(select(LeadForm.id).where(LeadForm.slug == "website")):
        session.add(
            LeadForm(
                slug="website",
                name="官网预约演示",
                pool_id=lead.id,
                channel="官网表单",
                campaign="2026春季展会",
                intro="留下联系方式,顾问将在 1 个工作日内联系您安排演示。",
                thank_you="感谢您的留言,我们会尽快与您联系。",
                fields=["name", "email", "job_title", "notes"],
                enabled=True,
                created_at=now - timedelta(days=30),
            )  # fmt: skip
        )
    session.commit()
    # Two possible duplicates for the conflict queue and one 撞单 on an owned customer.
    companies = [c for c in customers if c.kind == "company" and c.merged_into_id is None]
    leads = []
    for original in rng.sample(companies, min(2, len(companies))):
        variant = original.name.replace("有限公司", "").replace("股份", "").replace("集团", "") + "分公司"
        leads.append(
            LeadData(
                name=variant,
                contact_name="赵先生",
                phone=f"135{rng.randrange(10**8):08d}",
                channel="展会",
                campaign="2026春季展会",
            )  # fmt: skip
        )
    owned = [c for c in companies if c.owner_id is not None and c.phone]
    if owned:
        target = rng.choice(owned)
        leads.append(LeadData(name=target.name, contact_name="前台", phone=target.phone, channel="百度推广"))
    if leads:
        intake(session, leads, source="api", now=now - timedelta(hours=3), pool=lead, route=False)
    if _final_rescore not in EXTRA_SEEDERS:
        EXTRA_SEEDERS.append(_final_rescore)


def _final_rescore(session, rng: random.Random, now: datetime, context: dict) -> None:
    """After every seeder: score everyone, and date the demo follow-ups' ``score_at`` to those scores."""
    from crm.scoring import services

    session.flush()
    services.recompute_all(session, now, commit=False)
    session.execute(
        update(FollowUp).values(
            score_at=select(Customer.score).where(Customer.id == FollowUp.customer_id).scalar_subquery()
        )
    )
    grams.refresh_stats(session)
    session.flush()


if seed_intake not in EXTRA_SEEDERS:
    EXTRA_SEEDERS.append(seed_intake)
