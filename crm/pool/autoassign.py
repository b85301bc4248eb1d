"""Auto-assignment (自动分配) per pool: round-robin, load-balance (fewest held) or region/skill match.

Skips deactivated, away and at-cap users. The round-robin position lives in ``pools.rr_last_user_id``
and advances with a conditional update, so it survives restarts and two workers never pick the same
slot twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from crm.models import AssignStrategy, Customer, EventKind, Level, Pool, PoolMember, User
from crm.pool import services


def eligible_users(session: Session, pool: Pool, now: datetime) -> list[User]:
    """Active pool members (direct or through a team), not away, below their holding cap; by id.

    Holdings are counted for the pool's members only (an indexed count per member), not for everyone.
    """
    team_ids = select(PoolMember.team_id).where(
        PoolMember.pool_id == pool.id, PoolMember.team_id.is_not(None)
    )
    user_ids = select(PoolMember.user_id).where(
        PoolMember.pool_id == pool.id, PoolMember.user_id.is_not(None)
    )
    default_cap = services.holding_cap_default(session)
    members = session.execute(
        select(User, func.coalesce(Level.holding_cap, default_cap))
        .outerjoin(Level, Level.id == User.level_id)
        .where(
            User.active.is_(True),
            or_(User.away_until.is_(None), User.away_until <= now),
            or_(User.id.in_(user_ids), User.team_id.in_(team_ids)),
        )
        .order_by(User.id)
    ).all()
    if not members:
        return []
    held = dict(
        session.execute(
            select(Customer.owner_id, func.count())
            .where(
                Customer.owner_id.in_([user.id for user, _cap in members]),
                services.held_filter(services.won_count_toward_cap(session)),
            )
            .group_by(Customer.owner_id)
        ).all()
    )
    eligible = []
    for user, cap in members:
        user.held_now = held.get(user.id, 0)  # used by load-balance ordering
        if user.held_now < cap:
            eligible.append(user)
    return eligible


def _matches(user: User, customer: Customer) -> bool:
    return bool(
        (customer.region and customer.region in (user.regions or []))
        or (customer.industry and customer.industry in (user.skills or []))
    )


def _round_robin_pick(session: Session, pool: Pool, candidates: list[User]) -> User | None:
    """Advance the pool's rotation to the next candidate after the last one, race-safely."""
    for _attempt in range(10):
        last = session.scalar(select(Pool.rr_last_user_id).where(Pool.id == pool.id))
        after = [u for u in candidates if last is None or u.id > last]
        pick = (after or candidates)[0]
        condition = Pool.rr_last_user_id.is_(None) if last is None else Pool.rr_last_user_id == last
        moved = session.execute(
            update(Pool).where(Pool.id == pool.id, condition).values(rr_last_user_id=pick.id)
        ).rowcount
        if moved == 1:
            return pick
    return None


def choose(
    session: Session, pool: Pool, customer: Customer, now: datetime, exclude: set[int] = frozenset()
) -> User | None:
    """Who the pool's strategy gives ``customer`` to (None when nobody is eligible or no strategy)."""
    if pool.auto_assign_strategy == AssignStrategy.NONE:
        return None
    candidates = [u for u in eligible_users(session, pool, now) if u.id not in exclude]
    if customer.senior_only:  # 高难度 customers only go to senior levels
        candidates = [u for u in candidates if services.is_senior(u)]
    if not candidates:
        return None
    strategy = pool.auto_assign_strategy
    if strategy == AssignStrategy.ROUND_ROBIN:
        return _round_robin_pick(session, pool, candidates)
    if strategy == AssignStrategy.MATCH:
        matched = [u for u in candidates if _matches(u, customer)]
        candidates = matched or candidates
    return min(candidates, key=lambda u: (u.held_now, u.id))


def auto_assign(session: Session, customer_id: int, now: datetime) -> User | None:
    """Assign an unowned customer with its pool's strategy; ledgered as ``auto_assigned``. Commits.

    Returns the new owner, or None (no strategy, nobody eligible, or the customer was taken meanwhile).
    """
    customer = session.get(Customer, customer_id, populate_existing=True)
    if customer is None or customer.owner_id is not None or customer.pool_id is None:
        return None
    pool = session.get(Pool, customer.pool_id)
    if pool is None or not pool.enabled or pool.deleted_at is not None:
        return None
    tried: set[int] = set()
    try:
        while True:
            user = choose(session, pool, customer, now, exclude=tried)
            if user is None:
                session.commit()
                return None
            tried.add(user.id)
            services.lock_user(session, user.id)
            if services.held_count(session, user.id) >= services.holding_cap(session, user):
                continue  # reached the cap meanwhile: next candidate
            row = session.execute(
                update(Customer)
                .where(
                    Customer.id == customer.id,
                    Customer.owner_id.is_(None),
                    Customer.merged_into_id.is_(None),
                )
                .values(**services.start_holding_values(user.id, now))
                .returning(Customer.holding_no, Customer.pool_id)
                .execution_options(synchronize_session=False)
            ).first()
            if row is None:
                session.rollback()
                return None
            services.record_event(
                session, customer.id, EventKind.AUTO_ASSIGNED, now, actor_system=f"自动分配: {strategy_label(pool)}",
                to_user_id=user.id, pool_id=row[1], holding_no=row[0],
            )  # fmt: skip
            services.tell_receiver(session, user.id, [(customer.id, row[0])], now)
            services.announce_ownership_change(session, [customer.id], now)
            session.commit()
            return user
    except Exception:
        session.rollback()
        raise


def strategy_label(pool: Pool) -> str:
    return {
        AssignStrategy.ROUND_ROBIN: "轮流分配",
        AssignStrategy.LOAD_BALANCE: "按负载均衡",
        AssignStrategy.MATCH: "按区域/行业匹配",
    }.get(pool.auto_assign_strategy, "不自动分配")
