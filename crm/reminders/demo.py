"""``seed-demo`` extension: a workbench that looks alive — reminders generated from the demo follow-ups
(some due today, some overdue), a few custom reminders, in-app notifications, and spot-check samples."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm import clock
from crm.models import Customer, Reminder, ReminderDelivery, Role
from crm.reminders import services
from crm.reminders.dispatch import fan_out
from crm.reminders.generate import generate_all

CUSTOM_TITLES = [
    "发报价单给采购经理",
    "确认合同盖章进度",
    "约第二次产品演示",
    "问一下预算审批结果",
    "发送安全白皮书和部署方案",
    "回访试用反馈",
]


def seed_reminders(session: Session, rng: random.Random, now: datetime, context: dict) -> None:
    generate_all(session, now)
    today = clock.local_today(at=now)
    reps = [u for u in context["users"].values() if u.role == Role.REP]
    for rep in reps:
        owned = list(
            session.scalars(select(Customer).where(Customer.owner_id == rep.id).order_by(Customer.id))
        )
        rng.shuffle(owned)
        for k, customer in enumerate(owned[:4]):
            # Two due later today, one overdue since yesterday, one next week.
            if k < 2:
                due = clock.at_local(today, 16 + k, 30)
            elif k == 2:
                due = clock.at_local(today - timedelta(days=1), 10)
            else:
                due = clock.at_local(today + timedelta(days=7 - today.weekday() + 2), 10)
            create_at = min(now - timedelta(minutes=1), due - timedelta(days=2))
            reminder = services.add_custom(
                session, rep, title=rng.choice(CUSTOM_TITLES), due_at=max(due, now + timedelta(minutes=1)),
                now=create_at, customer=customer,
            )  # fmt: skip
            reminder.due_at = due  # seeded as if it was set days ago
    session.flush()
    fan_out(session, now)
    # Older notifications have been read; the last few of each user are new.
    day_start, _end = clock.day_bounds(today)
    older = select(Reminder.id).where(Reminder.due_at < day_start)
    session.execute(
        update(ReminderDelivery)
        .where(ReminderDelivery.channel == "in_app", ReminderDelivery.reminder_id.in_(older))
        .values(read_at=now)
    )
    from crm.followups.spotcheck import sample_daily

    for days_back in (1, 2):
        sample_daily(session, now, today - timedelta(days=days_back))
