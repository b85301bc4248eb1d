"""Demo data for the customer screens (``flask crm seed-demo``): extra contacts, WeChat ids and a few tags,
so customer pages show what a team's data looks like. Registered in ``crm.demo.EXTRA_SEEDERS``."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm.customers.keys import phone_key, wechat_key
from crm.demo import EXTRA_SEEDERS
from crm.models import Contact, Customer, Tag

DEMO_TAGS = ["重点客户", "展会线索", "老客户转介绍", "需定制方案", "价格敏感"]
SECOND_CONTACTS = [("采购经理", "经理"), ("IT 主管", "经理"), ("财务经理", "经理"), ("行政专员", "员工")]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "杰", "涛", "明", "超", "霞"]


def seed_customer_extras(session: Session, rng: random.Random, now: datetime, context: dict) -> None:
    customers: list[Customer] = context.get("customers", [])
    tags = [Tag(name=name, system=False) for name in DEMO_TAGS]
    session.add_all(tags)
    session.flush()
    for customer in customers:
        if rng.random() < 0.6:
            customer.wechat = f"wx_{customer.phone[-6:]}" if customer.phone else None
            customer.wechat_key = wechat_key(customer.wechat)
        if rng.random() < 0.35:
            title, level = rng.choice(SECOND_CONTACTS)
            phone = rng.choice(["139", "137", "188"]) + f"{rng.randrange(10**8):08d}"
            session.add(
                Contact(
                    customer_id=customer.id, name=rng.choice(SURNAMES) + rng.choice(GIVEN), job_title=title,
                    job_level=level, phone=phone, phone_key=phone_key(phone), is_primary=False,
                    created_at=customer.arrived_at + timedelta(days=rng.uniform(0, 5)),
                )
            )  # fmt: skip
        if rng.random() < 0.25:
            customer.tags = rng.sample(tags, rng.choice([1, 1, 2]))
    session.flush()


if seed_customer_extras not in EXTRA_SEEDERS:
    EXTRA_SEEDERS.append(seed_customer_extras)
