"""Nurture (长期培育) as a pool setting: allowed or not, at most nurture_max_days, with the expiry built in —
no 长期培育到期 rule needed; through the web, the API and the sweep."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, Pool, RecycleRule, RuleKind
from crm.recycle.sweep import sweep
from tests.conftest import login
from tests.recycle_support import sh

T0 = sh(2026, 3, 2, 9, 0)


def test_a_pool_without_a_nurture_rule_accepts_nurture_and_recycles_on_the_date(app, make, rep):
    pool = make.pool(members=[rep])
    with clock.frozen(T0):
        customer = make.customer(pool, owner=rep, claimed_at=T0)
    client = app.test_client()
    login(client, rep)
    with clock.frozen(T0):
        resp = client.post(f"/recycle/customers/{customer.id}/nurture", data={"until": "2026-03-20"})
    assert resp.status_code in (200, 303)
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).nurture_until is not None
    rules = db.session.scalars(select(RecycleRule.kind).where(RecycleRule.pool_id == pool.id)).all()
    assert rules == [RuleKind.NURTURE_EXPIRY]  # the expiry is built in
    sweep(db.session, sh(2026, 3, 19, 23, 59))
    assert db.session.get(Customer, customer.id).owner_id == rep.id
    sweep(db.session, sh(2026, 3, 20, 0, 0))
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id is None


def test_a_pool_may_refuse_nurture_and_caps_its_length(make, rep, admin, api):
    pool = make.pool(members=[rep], nurture_allowed=False, nurture_max_days=30)
    with clock.frozen(T0):
        customer = make.customer(pool, owner=rep, claimed_at=T0)
        url = f"/api/v1/customers/{customer.id}/nurture"
        refused = api(make.token(rep)).post(url, json={"until": "2026-03-20"})
    assert refused.status_code == 422 and "不允许长期培育" in refused.json["message"]
    admin_api = api(make.token(admin, "read write admin"))
    resp = admin_api.patch(f"/api/v1/pools/{pool.id}", json={"nurture_allowed": True})
    assert resp.status_code == 200 and resp.json["nurture_allowed"] is True
    assert db.session.get(Pool, pool.id).nurture_allowed is True
    with clock.frozen(T0):
        too_long = api(make.token(rep)).post(
            url, json={"until": (T0 + timedelta(days=45)).date().isoformat()}
        )
        ok = api(make.token(rep)).post(url, json={"until": "2026-03-20"})
    assert too_long.status_code == 422 and "30 天" in too_long.json["message"]
    assert ok.status_code == 200
