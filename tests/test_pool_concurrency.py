"""Races that must really race: threads, each with its own app context and database session, hit the same
rows at once (PostgreSQL with DATABASE_URL; SQLite file otherwise)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import AssignStrategy, ClaimCount, Customer, EventKind, Pool, PoolEvent, Role, User
from crm.pool import autoassign, services
from tests.conftest import _base_config


@pytest.fixture
def app_config(tmp_path, db_uri):
    config = _base_config(tmp_path, db_uri)
    # Enough connections for every thread to hold one at the starting line.
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 5, "max_overflow": 60, "pool_timeout": 60}
    return config


def race(app, n: int, work) -> list:
    """Run ``work(i)`` in ``n`` threads released together; each thread has its own app context/session."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        # A request context brings its own app context (and lets translated messages pick a locale).
        with app.test_request_context():
            try:
                prepared = work(i, None)
                barrier.wait(timeout=60)
                results[i] = work(i, prepared)
            except Exception as exc:  # noqa: BLE001 - reported to the test below
                results[i] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_fifty_reps_claiming_one_customer_yield_one_owner_and_49_taken_answers(app, make):
    reps = [make.user(Role.REP, name=f"销售{i:02d}", cap=10, commit=False) for i in range(50)]
    db.session.commit()
    pool = make.pool(members=reps, daily_claim_limit=5)
    customer = make.customer(pool)
    rep_ids = [r.id for r in reps]
    now = clock.now()

    def work(i, prepared):
        if prepared is None:
            return db.session.get(User, rep_ids[i])
        try:
            services.claim(db.session, customer.id, prepared, now)
            return "won"
        except services.PoolRefusal as refusal:
            return refusal

    results = race(app, 50, work)
    errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, services.PoolRefusal)]
    assert not errors, errors[:3]
    assert results.count("won") == 1
    refusals = [r for r in results if isinstance(r, services.PoolRefusal)]
    assert len(refusals) == 49
    db.session.expire_all()
    owner = db.session.get(Customer, customer.id).owner
    assert owner is not None and owner.id == rep_ids[results.index("won")]
    assert all(r.code == "taken" and r.message == f"已被 {owner.name} 领取。" for r in refusals)
    claimed_rows = db.session.scalar(
        select(func.count())
        .select_from(PoolEvent)
        .where(PoolEvent.customer_id == customer.id, PoolEvent.kind == EventKind.CLAIMED)
    )
    assert claimed_rows == 1
    # The losers' daily counts were rolled back with their refused claims.
    assert db.session.scalar(select(func.sum(ClaimCount.count))) == 1


def test_twenty_parallel_claims_of_one_rep_never_exceed_daily_limit_or_cap(app, make):
    rep = make.user(Role.REP, cap=5)
    pool = make.pool(members=[rep], daily_claim_limit=3)
    other_pool = make.pool(members=[rep], daily_claim_limit=10)
    for _ in range(2):
        make.customer(pool, owner=rep)  # already holds 2 of 5
    targets = [make.customer(pool if i % 2 else other_pool).id for i in range(20)]
    now = clock.now()

    def work(i, prepared):
        if prepared is None:
            return db.session.get(User, rep.id)
        try:
            services.claim(db.session, targets[i], prepared, now)
            return "won"
        except services.PoolRefusal as refusal:
            return refusal.code

    results = race(app, 20, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    db.session.expire_all()
    held = db.session.scalar(select(func.count()).select_from(Customer).where(Customer.owner_id == rep.id))
    from_limited = db.session.scalar(
        select(func.count())
        .select_from(Customer)
        .where(Customer.owner_id == rep.id, Customer.pool_id == pool.id)
    )
    assert results.count("won") == 3, Counter(map(str, results))
    assert held == 5  # the cap: 2 held before + 3 claimed
    assert from_limited - 2 <= 3  # never more than the daily limit from the limited pool
    assert set(results) <= {"won", "holding_cap", "daily_limit"}
    counts = dict(db.session.execute(select(ClaimCount.pool_id, ClaimCount.count)).all())
    assert counts.get(pool.id, 0) <= 3
    assert sum(counts.values()) == 3


def test_two_auto_assign_workers_never_double_assign_and_the_rotation_persists(app, make):
    reps = [make.user(Role.REP, cap=50, commit=False) for _ in range(3)]
    db.session.commit()
    pool = make.pool(members=reps, auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    customers = [make.customer(pool).id for _ in range(12)]
    ids = sorted(r.id for r in reps)
    now = clock.now()
    lock = threading.Lock()
    queue = list(customers) + list(customers)  # each customer offered to both workers

    def work(i, prepared):
        if prepared is None:
            return True
        picks = []
        while True:
            with lock:
                if not queue:
                    return picks
                cid = queue.pop(0)
            user = autoassign.auto_assign(db.session, cid, now)
            picks.append((cid, user.id if user else None))

    results = race(app, 2, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    assigned = [(cid, uid) for picks in results for cid, uid in picks if uid is not None]
    assert sorted(cid for cid, _ in assigned) == sorted(customers)  # each exactly once
    db.session.expire_all()
    ledger = db.session.scalars(
        select(PoolEvent).where(PoolEvent.kind == EventKind.AUTO_ASSIGNED).order_by(PoolEvent.id)
    ).all()
    assert len(ledger) == 12
    per_user = Counter(e.to_user_id for e in ledger)
    assert sorted(per_user.values()) == [4, 4, 4]  # the rotation went round, not to one worker's favourite
    # The position is stored on the pool: a restart (new session) continues after the last one.
    last = db.session.get(Pool, pool.id).rr_last_user_id
    assert last == ledger[-1].to_user_id
    db.session.remove()
    extra = make.customer(db.session.get(Pool, pool.id))
    expected = ids[(ids.index(last) + 1) % 3]
    assert autoassign.auto_assign(db.session, extra.id, now).id == expected
