"""Behaviour events from the API (``POST /api/v1/events``): who may post one on which customer, and how often.

An event lifts a customer's score, so a token may touch only customers its user may see (others answer 404,
like a customer that does not exist); the same customer and event type within ``EVENT_DEDUP_SECONDS``
counts once (the repeat is answered with the first event); and each token posts at most
``EVENTS_PER_MINUTE`` events a minute (429).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm import ratelimit
from crm.models import ApiToken, BehaviorEvent, Customer, User
from crm.permissions import can_view_customer

EVENT_DEDUP_SECONDS = 600
EVENTS_PER_MINUTE = 120


class EventRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_event_allowed(
    session: Session,
    token: ApiToken | None,
    user: User,
    customer: Customer,
    kind: str,
    at: datetime,
    now: datetime,
) -> BehaviorEvent | None:
    """Refuse (``EventRefused``) an event the caller may not post; return the event of the same customer
    and type within the window around ``at`` that it repeats (nothing is recorded then), or None to
    record it. Back-dated events are windowed around their own time, so spreading them does not help."""
    if not can_view_customer(session, user, customer):
        raise EventRefused(404, "customer_not_found", _("找不到该客户。"))
    config = current_app.config
    limit = int(config.get("EVENTS_PER_MINUTE", EVENTS_PER_MINUTE))
    key = f"events:token:{token.id}" if token is not None else f"events:user:{user.id}"
    if not ratelimit.hit(key, timedelta(minutes=1), limit, now):
        raise EventRefused(
            429, "too_many_requests", _("行为事件提交过于频繁(每分钟最多 %(n)s 条),请稍后再试。", n=limit)
        )
    window = timedelta(seconds=int(config.get("EVENT_DEDUP_SECONDS", EVENT_DEDUP_SECONDS)))
    return session.scalar(
        select(BehaviorEvent)
        .where(BehaviorEvent.customer_id == customer.id, BehaviorEvent.type == kind,
               BehaviorEvent.at > at - window, BehaviorEvent.at < at + window)
        .order_by(BehaviorEvent.id.desc())
        .limit(1)
    )  # fmt: skip
