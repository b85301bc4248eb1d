"""Embargo per pool (入池冷静期, Cordys): customers entering a pool — new or recycled — become claimable N
hours after they enter; the board shows when they open; the API and the web refuse earlier claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crm import clock
from crm.extensions import db
from crm.models import Customer, Pool
from tests.conftest import login

NOON = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def _embargoed(make, rep, hours=6):
    pool = make.pool(members=[rep], embargo_hours=hours)
    customer = make.customer(pool, arrived_at=NOON - timedelta(hours=1))
    return pool, customer


def test_a_claim_inside_the_embargo_is_refused_with_the_opening_time(app, make, rep, api):
    _pool, customer = _embargoed(make, rep)
    with clock.frozen(NOON):
        resp = api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/claim", json={})
    assert resp.status_code == 422 and resp.json["error"] == "embargo"
    assert "17:00" in resp.json["message"]  # entered 11:00 Shanghai + 6 h
    with clock.frozen(NOON + timedelta(hours=5)):
        resp = api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/claim", json={})
    assert resp.status_code == 200
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id == rep.id


def test_the_board_shows_when_an_embargoed_customer_opens(app, make, rep):
    pool, customer = _embargoed(make, rep)
    client = app.test_client()
    login(client, rep)
    with clock.frozen(NOON):
        page = client.get(f"/pools/{pool.id}").get_data(as_text=True)
        claim = client.post(
            f"/customers/{customer.id}/claim", data={"ctx": "board"}, headers={"HX-Request": "true"}
        )
    assert customer.name in page and "起可领" in page and "17:00" in page
    assert "冷静期" in claim.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id is None


def test_pools_without_an_embargo_are_claimable_at_once_and_the_setting_is_in_the_api(make, rep, admin, api):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, arrived_at=NOON - timedelta(hours=1))
    with clock.frozen(NOON):
        assert api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/claim", json={}).status_code == 200
    client = api(make.token(admin, "read write admin"))
    resp = client.patch(f"/api/v1/pools/{pool.id}", json={"embargo_hours": 24})
    assert resp.status_code == 200 and resp.json["embargo_hours"] == 24
    assert db.session.get(Pool, pool.id).embargo_hours == 24
    assert client.patch(f"/api/v1/pools/{pool.id}", json={"embargo_hours": -1}).status_code == 422
