"""锁定客户 (lock quota, as in 悟空CRM): an owner locks up to N held customers (N from their level's
``lock_quota``) so that no recycle rule takes them back — the sweep skips locked customers set-based.

Locks count separately from the holding cap (a locked customer is still held), are ledgered (``locked`` /
``unlocked``), end with the holding (release, recycle, transfer clear them), and the owner's manager or an
admin may unlock. Race-safe: a conditional UPDATE after the owner's row lock, so two taps never exceed
the quota.
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm.models import Customer, EventKind, Level, User
from crm.permissions import manages
from crm.pool.services import PoolRefusal, lock_user, record_event


def lock_quota(session: Session, user: User) -> int:
    """How many customers ``user`` may lock (their level's quota; 0 without a level)."""
    if user.level_id is None:
        return 0
    return session.scalar(select(Level.lock_quota).where(Level.id == user.level_id)) or 0


def locked_count(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(
                Customer.owner_id == user_id,
                Customer.locked_at.is_not(None),
                Customer.merged_into_id.is_(None),
            )
        )
        or 0
    )


def _owned(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.merged_into_id is not None:
        raise PoolRefusal("not_found", _("客户不存在。"))
    if customer.owner_id is None:
        raise PoolRefusal("not_owner", _("该客户在公海中,没有负责人。"))
    return customer


def lock(session: Session, customer_id: int, actor: User, now: datetime) -> Customer:
    """The owner locks a customer they hold, within their quota. Commits."""
    try:
        customer = _owned(session, customer_id)
        if customer.owner_id != actor.id:
            raise PoolRefusal("forbidden", _("只有负责人可以锁定自己的客户。"))
        if customer.locked_at is not None:
            raise PoolRefusal("invalid", _("该客户已锁定。"))
        lock_user(session, actor.id)
        quota, used = lock_quota(session, actor), locked_count(session, actor.id)
        if used >= quota:
            raise PoolRefusal(
                "lock_quota",
                _("你已锁定 %(used)s/%(quota)s 个客户,达到锁定上限。", used=used, quota=quota),
                used=used, quota=quota,
            )  # fmt: skip
        changed = session.execute(
            update(Customer)
            .where(Customer.id == customer.id, Customer.owner_id == actor.id, Customer.locked_at.is_(None))
            .values(locked_at=now, locked_by_id=actor.id, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            raise PoolRefusal("taken", _("客户刚刚被转移或锁定,请刷新后重试。"))
        record_event(
            session, customer.id, EventKind.LOCKED, now, actor=actor, pool_id=customer.pool_id,
            holding_no=customer.holding_no, to_user_id=actor.id, result=_("已锁定 (%(n)s/%(q)s)", n=used + 1, q=quota),
        )  # fmt: skip
        session.commit()
    except Exception:
        session.rollback()
        raise
    session.refresh(customer)
    return customer


def unlock(session: Session, customer_id: int, actor: User, now: datetime) -> Customer:
    """The owner, their manager or an admin unlocks. Commits."""
    try:
        customer = _owned(session, customer_id)
        if customer.owner_id != actor.id and not manages(session, actor, customer.owner_id):
            raise PoolRefusal("forbidden", _("只有负责人、其主管或管理员可以解除锁定。"))
        if customer.locked_at is None:
            raise PoolRefusal("invalid", _("该客户没有锁定。"))
        session.execute(
            update(Customer)
            .where(Customer.id == customer.id)
            .values(locked_at=None, locked_by_id=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        record_event(
            session, customer.id, EventKind.UNLOCKED, now, actor=actor, pool_id=customer.pool_id,
            holding_no=customer.holding_no, from_user_id=customer.owner_id, result=_("已解除锁定"),
        )  # fmt: skip
        session.commit()
    except Exception:
        session.rollback()
        raise
    session.refresh(customer)
    return customer
