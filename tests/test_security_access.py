"""Object permissions before rendering (issue 18 #7) and managers acting only on customers they can see
(issue 18, the assign design hole), through the web and the API."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.auth.services import create_token
from crm.extensions import db
from crm.models import Customer, PoolEvent, Role
from tests.conftest import login

SECRET_NAME = "华东机密客户有限公司"


@pytest.fixture
def regions(app, make):
    """Two teams: 华东 (its pool 华东区域池 and a rep holding a customer) and 华南 (a manager and a rep)."""
    east_mgr = make.user(Role.MANAGER, name="华东主管")
    east = make.team("华东", manager=east_mgr)
    east_rep = make.user(Role.REP, name="华东销售", team=east)
    south_mgr = make.user(Role.MANAGER, name="华南主管")
    south = make.team("华南", manager=south_mgr)
    south_rep = make.user(Role.REP, name="华南销售", team=south)
    east_pool = make.pool("华东区域池", teams=[east])
    south_pool = make.pool("华南区域池", teams=[south])
    in_pool = make.customer(east_pool, name=SECRET_NAME + "(池)")
    held = make.customer(east_pool, owner=east_rep, name=SECRET_NAME)
    south_lead = make.customer(south_pool, name="华南公海客户")
    db.session.commit()
    return {
        "east_mgr": east_mgr, "east_rep": east_rep, "south_mgr": south_mgr, "south_rep": south_rep,
        "east_pool": east_pool, "south_pool": south_pool, "in_pool": in_pool, "held": held,
        "south_lead": south_lead,
    }  # fmt: skip


def _client(app, user):
    client = app.test_client()
    login(client, user)
    return client


# ---------------------------------------------------------------- 7. no names through GET forms


def test_reminder_form_does_not_show_another_teams_customer(app, regions):
    south_rep = _client(app, regions["south_rep"])
    for customer in (regions["held"], regions["in_pool"]):
        resp = south_rep.get(f"/reminders/new?customer_id={customer.id}")
        assert resp.status_code == 404
        assert SECRET_NAME not in resp.get_data(as_text=True)
        post = south_rep.post("/reminders/new", data={"customer_id": customer.id, "title": "x"})
        assert post.status_code == 404
    # The owner still gets the form with the customer's name.
    own = _client(app, regions["east_rep"]).get(f"/reminders/new?customer_id={regions['held'].id}")
    assert own.status_code == 200 and SECRET_NAME in own.get_data(as_text=True)


def test_no_get_page_shows_an_invisible_customer_by_walking_ids(app, regions):
    """Every GET route with a customer id in its path, and every GET route with an id in its query, as a rep
    of another team: never the customer's name."""
    rep = _client(app, regions["south_rep"])
    target = regions["held"]
    ids = {"customer_id": target.id, "pool_id": regions["east_pool"].id, "user_id": regions["east_rep"].id}
    tried = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith(("/api/", "/static")):
            continue
        args = set(rule.arguments)
        if args - set(ids):
            continue
        path = rule.rule
        for name in args:
            path = path.replace(f"<int:{name}>", str(ids[name]))
        for query in ("", "?customer_id={customer_id}&pool_id={pool_id}&user_id={user_id}"):
            resp = rep.get(path + query.format(**ids))
            tried += 1
            body = resp.get_data().decode("utf-8", "replace")  # /favicon.ico is an image
            assert SECRET_NAME not in body, (path, query, resp.status_code)
    assert tried > 20


# ---------------------------------------------------------------- managers act only on what they can see


def _assign_api(app, actor, customer, receiver):
    token = create_token(db.session, actor, "t", regions_now(), "read write")
    db.session.commit()
    client = app.test_client()
    return client.post(
        f"/api/v1/customers/{customer.id}/assign",
        json={"user_id": receiver.id},
        headers={"Authorization": f"Bearer {token}"},
    )


def regions_now():
    from crm import clock

    return clock.now()


def _owner(customer_id):
    db.session.expire_all()
    return db.session.get(Customer, customer_id).owner_id


def _events(customer_id):
    return len(db.session.scalars(select(PoolEvent).where(PoolEvent.customer_id == customer_id)).all())


def test_manager_cannot_assign_from_a_pool_their_team_is_not_in_api(app, regions):
    before = _events(regions["in_pool"].id)
    resp = _assign_api(app, regions["south_mgr"], regions["in_pool"], regions["south_rep"])
    assert resp.status_code == 403, resp.get_json()
    assert _owner(regions["in_pool"].id) is None
    assert _events(regions["in_pool"].id) == before  # nothing ledgered


def test_manager_cannot_assign_from_a_pool_their_team_is_not_in_web(app, regions):
    client = _client(app, regions["south_mgr"])
    customer = regions["in_pool"]
    resp = client.post(f"/customers/{customer.id}/assign", data={"user_id": regions["south_rep"].id})
    assert resp.status_code in (403, 404, 422)
    assert _owner(customer.id) is None
    bulk = client.post(
        f"/pools/{regions['east_pool'].id}/assign",
        data={"customer_ids": [customer.id], "user_id": regions["south_rep"].id},
    )
    assert bulk.status_code in (403, 404, 422)
    assert _owner(customer.id) is None


def test_manager_cannot_move_another_teams_holding_to_their_rep(app, regions):
    resp = _assign_api(app, regions["south_mgr"], regions["held"], regions["south_rep"])
    assert resp.status_code == 403
    assert _owner(regions["held"].id) == regions["east_rep"].id


def test_manager_cannot_assign_to_another_teams_rep(app, regions):
    resp = _assign_api(app, regions["south_mgr"], regions["south_lead"], regions["east_rep"])
    assert resp.status_code == 403
    assert _owner(regions["south_lead"].id) is None


def test_manager_assigns_from_their_teams_pool_to_their_rep(app, regions):
    resp = _assign_api(app, regions["south_mgr"], regions["south_lead"], regions["south_rep"])
    assert resp.status_code == 200, resp.get_json()
    assert _owner(regions["south_lead"].id) == regions["south_rep"].id


def test_manager_who_administers_a_pool_assigns_its_customers_to_their_team(app, make, regions):
    from crm.models import PoolAdmin

    db.session.add(PoolAdmin(pool_id=regions["east_pool"].id, user_id=regions["south_mgr"].id))
    db.session.commit()
    resp = _assign_api(app, regions["south_mgr"], regions["in_pool"], regions["south_rep"])
    assert resp.status_code == 200, resp.get_json()


def test_admin_assigns_anything_as_before(app, make, regions):
    admin = make.user(Role.ADMIN)
    resp = _assign_api(app, admin, regions["in_pool"], regions["south_rep"])
    assert resp.status_code == 200
