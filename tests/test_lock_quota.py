"""锁定客户 (lock quota): an owner locks up to N held customers (N by level); the sweep never recycles a
locked customer; locks are ledgered, shown on the customer page, end with the holding, and a manager
unlocks — through the web and the API."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, EventKind, PoolEvent, Role, RuleKind
from crm.recycle.sweep import sweep
from tests.conftest import login
from tests.recycle_support import add_rule, sh

T0 = sh(2026, 3, 2, 9, 0)


def _setup(make, manager, quota=1):
    level = make.level(cap=20)
    level.lock_quota = quota
    rep = make.user(Role.REP, level=level, team=manager.team)
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    with clock.frozen(T0):
        customers = [make.customer(pool, owner=rep, claimed_at=T0) for _ in range(2)]
    return rep, pool, customers


def test_a_locked_customer_is_never_recycled_and_the_quota_holds(make, manager, api):
    rep, _pool, (first, second) = _setup(make, manager)
    client = api(make.token(rep))
    with clock.frozen(T0):
        resp = client.post(f"/api/v1/customers/{first.id}/lock")
        assert resp.status_code == 200 and resp.json["customer"]["locked_at"] is not None
        over = client.post(f"/api/v1/customers/{second.id}/lock")
    assert over.status_code == 422 and over.json["error"] == "lock_quota" and "1/1" in over.json["message"]
    sweep(db.session, T0 + timedelta(days=8))
    db.session.expire_all()
    assert db.session.get(Customer, first.id).owner_id == rep.id  # locked: kept
    assert db.session.get(Customer, second.id).owner_id is None  # recycled as usual
    kinds = db.session.scalars(select(PoolEvent.kind).where(PoolEvent.customer_id == first.id)).all()
    assert EventKind.LOCKED in kinds and EventKind.RECYCLED not in kinds


def test_the_customer_page_shows_the_lock_and_a_manager_unlocks(app, make, manager):
    rep, _pool, (first, _second) = _setup(make, manager)
    client = app.test_client()
    login(client, rep)
    page = client.get(f"/customers/{first.id}").get_data(as_text=True)
    assert "锁定" in page
    assert client.post(f"/customers/{first.id}/lock").status_code in (302, 303)
    page = client.get(f"/customers/{first.id}").get_data(as_text=True)
    assert "已锁定,不会被回收" in page and "解除锁定" in page
    listed = client.get("/customers").get_data(as_text=True)  # the rep's list marks it too
    assert listed.count(">已锁定</span>") == 1
    boss = app.test_client()
    login(boss, manager)
    assert boss.post(f"/customers/{first.id}/unlock").status_code in (302, 303)
    db.session.expire_all()
    assert db.session.get(Customer, first.id).locked_at is None
    kinds = db.session.scalars(
        select(PoolEvent.kind).where(PoolEvent.customer_id == first.id).order_by(PoolEvent.id)
    ).all()
    assert kinds[-2:] == [EventKind.LOCKED, EventKind.UNLOCKED]


def test_only_the_owner_locks_and_a_lock_ends_with_the_holding(make, manager, api):
    rep, _pool, (first, _second) = _setup(make, manager)
    other = make.user(Role.REP, team=manager.team)
    assert api(make.token(other)).post(f"/api/v1/customers/{first.id}/lock").status_code == 403
    assert api(make.token(rep)).post(f"/api/v1/customers/{first.id}/lock").status_code == 200
    resp = api(make.token(rep)).post(
        f"/api/v1/customers/{first.id}/release", json={"reason": "联系不上", "note": "电话空号"}
    )
    assert resp.status_code == 200
    db.session.expire_all()
    assert db.session.get(Customer, first.id).locked_at is None
