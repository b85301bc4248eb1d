"""Holding-cap option (保有量): whether won customers (成交客户) count against the cap — web and API settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm import clock
from crm.extensions import db
from crm.models import Customer, Role
from crm.pool import services
from crm.settings import store


@pytest.fixture(autouse=True)
def _request_context(app):
    with app.test_request_context():
        yield


def _full_rep(make):
    rep = make.user(Role.REP, cap=2)
    pool = make.pool(members=[rep], daily_claim_limit=10)
    make.customer(pool, owner=rep)
    make.customer(pool, owner=rep, won_at=clock.now() - timedelta(days=3))
    return rep, pool


def test_won_customers_count_by_default(make):
    rep, pool = _full_rep(make)
    with pytest.raises(services.PoolRefusal) as info:
        services.claim(db.session, make.customer(pool).id, rep, clock.now())
    assert info.value.code == "holding_cap"


def test_a_team_may_exclude_won_customers_from_the_cap(app, make, admin_client):
    rep, pool = _full_rep(make)
    resp = admin_client.post(
        "/admin/pools/rules",
        data={"release_reasons": "联系不上\n其他", "default_holding_cap": "20", "won_count_toward_cap": ""},
    )
    assert resp.status_code in (200, 303)
    db.session.expire_all()
    assert store.get(db.session, "pool")["won_count_toward_cap"] is False
    customer = make.customer(pool)
    result = services.claim(db.session, customer.id, rep, clock.now())
    assert result.held == 2 and result.cap == 2
    assert services.held_count(db.session, rep.id) == 2
    assert db.session.get(Customer, customer.id).owner_id == rep.id


def test_the_option_is_a_settings_field_in_the_api(make, admin, api):
    client = api(make.token(admin, "read write admin"))
    resp = client.put("/api/v1/settings/pool", json={"won_count_toward_cap": False})
    assert resp.status_code == 200, resp.json
    assert client.get("/api/v1/settings/pool").json["data"]["won_count_toward_cap"] is False
    assert client.put("/api/v1/settings/pool", json={"won_count_toward_cap": "maybe"}).status_code == 422
