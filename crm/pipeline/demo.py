"""Demo opportunities for ``flask crm seed-demo``: owned customers get opportunities (some through 一转三)
that moved through the stages over past days — with quotes, follow-ups, won deals with contracts and lost
ones with reasons — all through ``crm.pipeline.services`` so the history (StageChange rows, clocks) is the
same a real team would leave. Registered in ``crm.demo.EXTRA_SEEDERS``."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm import clock
from crm.demo import EXTRA_SEEDERS
from crm.models import Customer, FollowUp, Lifecycle, StageKind, StageRequirement, User
from crm.pipeline import services

PRODUCTS = [("CRM 标准版(年)", 1200), ("CRM 专业版(年)", 2400), ("实施服务(人天)", 1500), ("数据迁移", 5000),
            ("培训服务", 3000), ("短信包(万条)", 450)]  # fmt: skip
FOLLOW_TEXTS = [("电话沟通需求,客户关注移动端和报表", "发送产品资料"), ("上门演示,采购和 IT 都参加了", "整理演示反馈"),
                ("微信确认预算范围和决策流程", "约下周演示"), ("客户反馈价格偏高,需要内部申请", "准备优惠方案")]  # fmt: skip


def _payload(rng: random.Random, stage, customer: Customer, at: datetime, n: int) -> dict:
    req = stage.requirement
    if req == StageRequirement.FOLLOWUP:
        content, plan = rng.choice(FOLLOW_TEXTS)
        return {"channel": rng.choice(["phone", "wechat", "visit"]), "content": content, "next_plan": plan,
                "next_contact_at": at + timedelta(days=rng.choice([2, 3, 5]))}  # fmt: skip
    if req == StageRequirement.QUOTE:
        items = [{"name": name, "qty": rng.choice([1, 2, 5, 10]), "price": price}
                 for name, price in rng.sample(PRODUCTS, rng.choice([1, 2, 3]))]  # fmt: skip
        return {"items": items, "valid_until": (at + timedelta(days=30)).date()}
    if req == StageRequirement.CONTRACT:
        return {"contract_number": f"HT-{at:%Y%m}-{n:04d}", "amount": rng.choice([8000, 12000, 26000, 48000, 95000]),
                "signed_on": clock.local(at).date(), "invoice_title": customer.name,
                "tax_id": f"91{rng.randrange(10**16):016d}"}  # fmt: skip
    if req == StageRequirement.LOST_REASON:
        return {"lost_reason": rng.choice(services.DEFAULT_LOST_REASONS[:-1])}
    return {}


def seed_opportunities(session: Session, rng: random.Random, now: datetime, context: dict) -> None:
    customers = [
        c for c in context.get("customers", []) if c.owner_id is not None and c.claimed_at is not None
    ]
    stages = services.active_stages(session)
    open_stages = [s for s in stages if s.kind == StageKind.OPEN]
    won = next(s for s in stages if s.kind == StageKind.WON)
    lost = next(s for s in stages if s.kind == StageKind.LOST)
    n = 0
    for customer in customers:
        if rng.random() > 0.5:
            continue
        user = session.get(User, customer.owner_id)
        at = customer.claimed_at + timedelta(hours=rng.uniform(2, 48))
        if at >= now - timedelta(hours=2):
            continue
        last_touch = customer.last_followup_at
        try:
            if customer.lifecycle == Lifecycle.LEAD and customer.contact_name and rng.random() < 0.6:
                opp = services.convert_lead(
                    session, customer, user, at, services.ConversionInput(customer.name)
                ).opportunity
            else:
                opp = services.create_opportunity(session, customer, user, at, services.OpportunityInput(
                    rng.choice(["年度采购", "系统升级", "新门店上线", "二期扩容"]) + " · " + customer.name[:12]))  # fmt: skip
            path = [s for s in open_stages if s.position > opp.stage.position][: rng.choice([0, 1, 2, 3, 4])]
            ending = rng.random()
            if ending < 0.25:
                path.append(won)
            elif ending < 0.4:
                path.append(lost)
            for stage in path:
                step = at + timedelta(hours=rng.uniform(12, 240))
                if step >= now - timedelta(hours=1):
                    break
                at = step
                n += 1
                services.change_stage(session, opp, stage, user, at, _payload(rng, stage, customer, at, n))
        except services.StageError:
            continue  # e.g. a frequency cap in block mode: the opportunity stops where it is
        # Follow-ups recorded "in the past" must not move the touch clock backwards.
        latest = session.scalar(select(func.max(FollowUp.at)).where(FollowUp.customer_id == customer.id))
        customer.last_followup_at = (
            max(t for t in (last_touch, latest) if t) if (last_touch or latest) else None
        )
    session.flush()


if seed_opportunities not in EXTRA_SEEDERS:
    EXTRA_SEEDERS.append(seed_opportunities)
