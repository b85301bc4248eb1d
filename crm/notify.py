"""Create reminders/notifications idempotently. Any feature notifies a user through ``notify``;
the reminders feature delivers them (in-app, email, DingTalk, WeCom, webhook) exactly once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from crm.dbutil import insert_ignore
from crm.models import Reminder, ReminderStatus


def notify(
    session: Session,
    *,
    user_id: int,
    kind: str,
    title: str,
    unique_key: str,
    due_at: datetime,
    now: datetime,
    customer_id: int | None = None,
    body: str | None = None,
) -> bool:
    """Insert one reminder unless one with ``unique_key`` exists. Returns True when it was new."""
    stmt = insert_ignore(session, Reminder.__table__, ["unique_key"]).values(
        user_id=user_id,
        customer_id=customer_id,
        kind=kind,
        title=title[:200],
        body=body,
        due_at=due_at,
        status=ReminderStatus.OPEN,
        unique_key=unique_key[:160],
        created_at=now,
    )
    return session.execute(stmt).rowcount == 1
