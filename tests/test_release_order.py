"""Release notes, the order of checks (permission before the body) and refusals that name the right reason —
through the web and the API."""

from __future__ import annotations

import pytest

from crm.extensions import db
from crm.models import Customer, Role
from tests.conftest import login

REASON = "联系不上"


@pytest.fixture
def pool(make, rep, manager):
    return make.pool(members=[rep], admins=[manager])


@pytest.mark.parametrize("via", ["web", "api"])
def test_a_complete_four_character_note_is_a_note(app, make, rep, pool, api, via):
    customer = make.customer(pool, owner=rep)
    if via == "api":
        resp = api(make.token(rep)).post(
            f"/api/v1/customers/{customer.id}/release", json={"reason": REASON, "note": "电话空号"}
        )
        assert resp.status_code == 200
    else:
        client = app.test_client()
        login(client, rep)
        resp = client.post(f"/customers/{customer.id}/release", data={"reason": REASON, "note": "电话空号"})
        assert resp.status_code in (302, 303)
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id is None


@pytest.mark.parametrize("note", ["空", "   ", " 号 "])
def test_a_blank_or_one_character_note_is_refused(make, rep, pool, api, note):
    customer = make.customer(pool, owner=rep)
    resp = api(make.token(rep)).post(
        f"/api/v1/customers/{customer.id}/release", json={"reason": REASON, "note": note}
    )
    assert resp.status_code == 422
    assert resp.json.get("field") == "note" or "note" in resp.json.get("fields", {})


def test_releasing_another_reps_customer_with_a_short_note_is_403_not_422(app, make, rep, pool, api):
    other = make.user(Role.REP)
    customer = make.customer(pool, owner=other)
    resp = api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/release", json={"note": "x"})
    assert resp.status_code == 403
    client = app.test_client()
    login(client, rep)
    resp = client.post(f"/customers/{customer.id}/release", data={"note": "x"})
    assert resp.status_code == 403


def test_a_rep_transferring_a_teammates_customer_is_not_told_it_is_another_team(app, make, rep, manager, api):
    teammate = make.user(Role.REP, team=rep.team)
    pool = make.pool(members=[rep, teammate])
    customer = make.customer(pool, owner=teammate)
    resp = api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/assign", json={"user_id": rep.id})
    assert resp.status_code == 403 and "其他团队" not in resp.json["message"]
    bulk = api(make.token(rep)).post(
        "/api/v1/customers/assign", json={"customer_ids": [customer.id], "user_id": teammate.id}
    )
    assert bulk.status_code == 403
    assert "其他团队" not in bulk.json["message"] and "主管" in bulk.json["message"]
    client = app.test_client()
    login(client, rep)
    page = client.post(f"/customers/{customer.id}/assign", data={})  # empty body: still 403 first
    assert page.status_code == 403 and "其他团队" not in page.get_data(as_text=True)


def test_a_manager_transferring_another_teams_customer_is_told_so(make, manager, api):
    stranger = make.user(Role.REP, team=make.team("二组"))
    customer = make.customer(make.pool(members=[stranger]), owner=stranger)
    resp = api(make.token(manager)).post(f"/api/v1/customers/{customer.id}/assign", json={})
    assert resp.status_code == 403  # not even visible to them
    bulk = api(make.token(manager)).post(
        "/api/v1/customers/assign", json={"customer_ids": [customer.id], "user_id": manager.id}
    )
    assert bulk.status_code == 403 and "其他团队" in bulk.json["message"]


def test_a_manager_assigns_within_their_own_team(make, rep, manager, pool, api):
    teammate = make.user(Role.REP, team=rep.team)
    customer = make.customer(pool, owner=rep)
    resp = api(make.token(manager)).post(
        f"/api/v1/customers/{customer.id}/assign", json={"user_id": teammate.id}
    )
    assert resp.status_code == 200 and resp.json["customer"]["owner"]["id"] == teammate.id


def test_a_followup_on_a_customer_one_cannot_edit_is_403_before_the_body(make, rep, manager, api):
    other = make.user(Role.REP)
    pool = make.pool(members=[rep, other], admins=[rep])
    customer = make.customer(pool, owner=other)
    resp = api(make.token(rep)).post(f"/api/v1/customers/{customer.id}/followups", json={})
    assert resp.status_code in (403, 404)
    assert resp.status_code != 422
