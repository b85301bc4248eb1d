"""Auto-assignment (自动分配): round-robin, load-balance and region/skill match; who is skipped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import AssignStrategy, Customer, EventKind, PoolEvent, Role
from crm.pool.autoassign import auto_assign


@pytest.fixture(autouse=True)
def _request_context(app):
    with app.test_request_context():
        yield


def test_round_robin_goes_round_and_skips_away_inactive_and_full(make):
    a, b, c, d, e = (make.user(Role.REP, cap=5, commit=False) for _ in range(5))
    b.away_until = clock.now() + timedelta(days=2)
    c.active = False
    db.session.commit()
    pool = make.pool(members=[a, b, c, d, e], auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    for _ in range(5):
        make.customer(pool, owner=e)  # e is at the cap
    picks = [auto_assign(db.session, make.customer(pool).id, clock.now()).id for _ in range(4)]
    assert picks == [a.id, d.id, a.id, d.id]


def test_load_balance_gives_to_whoever_holds_fewest(make):
    busy, idle = make.user(Role.REP, cap=10), make.user(Role.REP, cap=10)
    pool = make.pool(members=[busy, idle], auto_assign_strategy=AssignStrategy.LOAD_BALANCE)
    for _ in range(3):
        make.customer(pool, owner=busy)
    picks = [auto_assign(db.session, make.customer(pool).id, clock.now()).id for _ in range(4)]
    assert picks == [idle.id, idle.id, idle.id, busy.id]


def test_match_prefers_region_or_industry_then_load(make):
    east = make.user(Role.REP, cap=10)
    east.regions = ["华东"]
    retail = make.user(Role.REP, cap=10)
    retail.skills = ["零售"]
    db.session.commit()
    pool = make.pool(members=[east, retail], auto_assign_strategy=AssignStrategy.MATCH)
    assert auto_assign(db.session, make.customer(pool, region="华东").id, clock.now()).id == east.id
    assert auto_assign(db.session, make.customer(pool, industry="零售").id, clock.now()).id == retail.id
    assert auto_assign(db.session, make.customer(pool, region="西南").id, clock.now()) is not None


def test_no_strategy_nobody_eligible_owned_or_senior_only(make):
    junior = make.user(Role.REP, cap=10)
    pool = make.pool(members=[junior])
    assert auto_assign(db.session, make.customer(pool).id, clock.now()) is None
    rr = make.pool(members=[junior], auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    assert auto_assign(db.session, make.customer(rr, senior_only=True).id, clock.now()) is None
    assert auto_assign(db.session, make.customer(rr, owner=junior).id, clock.now()) is None
    senior = make.user(Role.REP, cap=10, senior=True)
    hard_pool = make.pool(members=[junior, senior], auto_assign_strategy=AssignStrategy.LOAD_BALANCE)
    hard = make.customer(hard_pool, senior_only=True)
    assert auto_assign(db.session, hard.id, clock.now()).id == senior.id


def test_auto_assignment_is_ledgered_with_the_strategy(make):
    rep = make.user(Role.REP, cap=10)
    pool = make.pool(members=[rep], auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    customer = make.customer(pool)
    auto_assign(db.session, customer.id, clock.now())
    row = db.session.scalar(select(PoolEvent).where(PoolEvent.kind == EventKind.AUTO_ASSIGNED))
    assert row.actor_id is None and row.actor_system == "自动分配: 轮流分配" and row.to_user_id == rep.id
    fresh = db.session.get(Customer, customer.id)
    assert fresh.owner_id == rep.id and row.holding_no == fresh.holding_no == 1
