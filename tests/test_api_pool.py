"""The JSON API of the pool (SPEC §9): pools, the board, a customer and its timeline, claim / release /
assign (single and bulk), and user administration — same rules, JSON errors with fitting statuses."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, EventKind, Pool, PoolEvent, Role, User
from crm.pool import manage


def test_pools_list_shows_counts_and_my_claims(api, make, rep):
    pool = make.pool(members=[rep], name="新线索池", daily_claim_limit=5)
    make.customer(pool)
    make.pool(name="别人的")
    body = api(make.token(rep)).get("/api/v1/pools").get_json()
    assert [p["name"] for p in body["pools"]] == ["新线索池"]
    assert body["pools"][0]["open_customers"] == 1 and body["pools"][0]["daily_claim_limit"] == 5
    assert body["held"] == 0 and body["cap"] == 20 and "联系不上" in body["release_reasons"]


def test_admin_creates_and_patches_a_pool_and_pool_admins_patch_their_own(api, make, admin, rep):
    client = api(make.token(admin, "read write admin"))
    resp = client.post("/api/v1/pools", json={
        "name": "华东区域池", "daily_claim_limit": 4, "prev_owner_rule": "cooldown", "prev_owner_days": 7,
        "mask_contacts": True, "auto_assign_strategy": "round_robin", "release_times": ["10:00"], "fair_release": True,
        "member_user_ids": [rep.id], "nurture_max_days": 90,
    })  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    pool_id = resp.get_json()["id"]
    assert resp.get_json()["release_times"] == ["10:00"] and resp.get_json()["member_user_ids"] == [rep.id]
    ops = make.user(Role.REP)
    resp = client.patch(f"/api/v1/pools/{pool_id}", json={"admin_user_ids": [ops.id], "daily_claim_limit": 6})
    assert resp.status_code == 200 and resp.get_json()["daily_claim_limit"] == 6
    ops_client = api(make.token(ops, "read write"))
    assert (
        ops_client.patch(f"/api/v1/pools/{pool_id}", json={"enabled": False}).get_json()["enabled"] is False
    )
    resp = ops_client.patch(f"/api/v1/pools/{pool_id}", json={"admin_user_ids": [rep.id]})
    assert resp.status_code == 403
    assert ops_client.patch(f"/api/v1/pools/{pool_id}", json={"admin_user_ids": ["x"]}).status_code == 403
    assert (
        ops_client.patch(
            f"/api/v1/pools/{pool_id}", json={"admin_user_ids": [ops.id], "enabled": True}
        ).status_code
        == 200
    )
    resp = api(make.token(rep)).patch(f"/api/v1/pools/{pool_id}", json={"enabled": True})
    assert resp.status_code == 403
    assert manage.admin_user_ids(db.session.get(Pool, pool_id)) == [ops.id]


def test_pool_admin_api_rejects_bad_bodies(api, make, admin):
    client = api(make.token(admin, "read write admin"))
    pool = make.pool(name="甲")
    cases = [
        ({"name": ""}, 422), ({"daily_claim_limit": "many"}, 422), ({"release_times": ["99:99"]}, 422),
        ({"bogus": 1}, 422), ({"member_user_ids": [123456]}, 422), ({"name": {"a": 1}}, 422),
        ({"admin_user_ids": ["x"]}, 422),
    ]  # fmt: skip
    for body, status in cases:
        resp = client.patch(f"/api/v1/pools/{pool.id}", json=body)
        assert resp.status_code == status, (body, resp.get_json())
        assert resp.get_json()["error"] and resp.get_json()["message"]
    assert client.patch(f"/api/v1/pools/{pool.id}", data="x").status_code == 415
    assert (
        client.patch(f"/api/v1/pools/{pool.id}", data="[1]", content_type="application/json").status_code
        == 400
    )
    assert client.patch("/api/v1/pools/9999", json={"name": "乙"}).status_code == 404
    assert (
        api(make.token(make.user(Role.REP), "read write"))
        .post("/api/v1/pools", json={"name": "乙"})
        .status_code
        == 403
    )


def test_pool_customers_are_the_board_with_a_cursor(api, make, rep):
    pool = make.pool(members=[rep], mask_contacts=True)
    ids = [make.customer(pool, score=50 + i, phone="13812345678").id for i in range(5)]
    client = api(make.token(rep))
    body = client.get(f"/api/v1/pools/{pool.id}/customers?limit=2").get_json()
    assert [i["id"] for i in body["items"]] == ids[::-1][:2] and body["items"][0]["phone"] == "138****5678"
    rest = client.get(f"/api/v1/pools/{pool.id}/customers?limit=10&cursor={body['next_cursor']}").get_json()
    assert [i["id"] for i in rest["items"]] == ids[::-1][2:] and rest["next_cursor"] is None
    assert client.get(f"/api/v1/pools/{pool.id}/customers?cursor=junk").status_code == 400
    assert client.get(f"/api/v1/pools/{pool.id}/customers?limit=x").status_code == 400
    assert client.get(f"/api/v1/pools/{make.pool().id}/customers").status_code == 404


def test_claim_api_statuses_follow_the_refusal_codes(api, make, rep):
    other = make.user(Role.REP, name="小李")
    pool = make.pool(members=[rep, other], daily_claim_limit=1)
    a, b = make.customer(pool), make.customer(pool)
    mine = api(make.token(rep))
    resp = mine.post(f"/api/v1/customers/{a.id}/claim")
    assert resp.status_code == 200
    assert resp.get_json()["customer"]["owner"]["id"] == rep.id and resp.get_json()["claims_today"] == 1
    resp = api(make.token(other)).post(f"/api/v1/customers/{a.id}/claim")
    assert resp.status_code == 409 and resp.get_json() == {
        "error": "taken",
        "message": "已被 小王 领取。",
        "owner": "小王",
    }
    resp = mine.post(f"/api/v1/customers/{b.id}/claim")
    assert (
        resp.status_code == 429
        and resp.get_json()["error"] == "daily_limit"
        and resp.get_json()["limit"] == 1
    )
    assert mine.post("/api/v1/customers/99999/claim").status_code == 404
    stranger_pool = make.pool()
    assert mine.post(f"/api/v1/customers/{make.customer(stranger_pool).id}/claim").status_code == 403
    read_only = api(make.token(other, "read"))
    assert read_only.post(f"/api/v1/customers/{b.id}/claim").get_json()["error"] == "insufficient_scope"


def test_release_api_needs_reason_and_note(api, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    client = api(make.token(rep))
    for body in (
        {},
        {"reason": "联系不上"},
        {"reason": "乱写", "note": "交接说明写清楚"},
        {"reason": "联系不上", "note": "短"},
    ):
        resp = client.post(f"/api/v1/customers/{customer.id}/release", json=body)
        assert resp.status_code == 422, body
    assert db.session.get(Customer, customer.id).owner_id == rep.id
    resp = client.post(
        f"/api/v1/customers/{customer.id}/release", json={"reason": "联系不上", "note": "电话停机,微信未回。"}
    )
    assert resp.status_code == 200 and resp.get_json()["customer"]["in_pool"] is True
    assert (
        client.post(
            f"/api/v1/customers/{customer.id}/release", json={"reason": "联系不上", "note": "再来一次的说明"}
        ).status_code
        == 409
    )


def test_assign_api_single_and_bulk(api, make, rep, manager):
    pool = make.pool(members=[rep])
    a, b, c = make.customer(pool), make.customer(pool), make.customer(pool, owner=rep)
    client = api(make.token(manager))
    resp = client.post(f"/api/v1/customers/{a.id}/assign", json={"user_id": rep.id})
    assert resp.status_code == 200 and resp.get_json()["customer"]["owner"]["id"] == rep.id
    resp = client.post(
        "/api/v1/customers/assign", json={"customer_ids": [b.id, c.id, 4242], "user_id": rep.id}
    )
    body = resp.get_json()
    assert resp.status_code == 200 and body["assigned"] == [b.id]
    assert {r["id"]: r["error"] for r in body["refused"]} == {c.id: "taken", 4242: "not_found"}
    assert client.post(f"/api/v1/customers/{a.id}/assign", json={"user_id": "x"}).status_code == 422
    assert client.post(f"/api/v1/customers/{a.id}/assign", json={"user_id": 99999}).status_code == 404
    assert (
        client.post("/api/v1/customers/assign", json={"customer_ids": ["a"], "user_id": rep.id}).status_code
        == 422
    )
    assert (
        api(make.token(rep)).post(f"/api/v1/customers/{b.id}/assign", json={"user_id": rep.id}).status_code
        == 403
    )


def test_assign_api_cap_and_override(api, make, manager):
    small = make.user(Role.REP, cap=1, team=manager.team)
    pool = make.pool(members=[small])
    make.customer(pool, owner=small)
    target = make.customer(pool)
    client = api(make.token(manager))
    resp = client.post(f"/api/v1/customers/{target.id}/assign", json={"user_id": small.id})
    assert (
        resp.status_code == 422 and resp.get_json()["error"] == "holding_cap" and resp.get_json()["cap"] == 1
    )
    resp = client.post(
        f"/api/v1/customers/{target.id}/assign", json={"user_id": small.id, "override_cap": True}
    )
    assert resp.status_code == 200 and resp.get_json()["override_used"] is True
    row = db.session.scalar(
        select(PoolEvent).where(PoolEvent.kind == EventKind.ASSIGNED, PoolEvent.customer_id == target.id)
    )
    assert row.data == {"override_cap": True}


def test_customer_api_includes_extras_from_other_features_and_masks_pool_contacts(api, make, rep):
    from crm import hooks

    def extra(session, customer, user):
        return {"next_due": {"at": "2026-03-05T10:00:00+08:00", "rule": "7天未跟进"}}

    hooks.register_customer_json(extra)
    try:
        pool = make.pool(members=[rep], mask_contacts=True)
        customer = make.customer(pool, phone="13812345678", contact_name="张伟")
        body = api(make.token(rep)).get(f"/api/v1/customers/{customer.id}").get_json()
    finally:
        hooks.CUSTOMER_JSON.remove(extra)
    assert body["phone"] == "138****5678" and body["contact_name"] == "张***" and body["masked"] is True
    assert body["pool"]["id"] == pool.id and body["owner"] is None and body["grade"] == "B"
    assert body["next_due"]["rule"] == "7天未跟进"


def test_customer_api_permissions_and_merged(api, make, rep):
    other = make.user(Role.REP)
    theirs = make.customer(make.pool(), owner=other)
    merged = make.customer(make.pool(), owner=rep, merged_into_id=theirs.id)
    client = api(make.token(rep))
    assert client.get(f"/api/v1/customers/{theirs.id}").status_code == 403
    resp = client.get(f"/api/v1/customers/{merged.id}")  # the loser's id redirects to the winner
    assert resp.status_code == 301 and resp.get_json()["merged_into"] == theirs.id
    assert resp.headers["Location"].endswith(f"/api/v1/customers/{theirs.id}")


def test_timeline_api_pages_with_ledger_details(api, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    client = api(make.token(rep))
    client.post(f"/api/v1/customers/{customer.id}/claim")
    client.post(
        f"/api/v1/customers/{customer.id}/release", json={"reason": "预算不足", "note": "明年一季度再联系"}
    )
    body = client.get(f"/api/v1/customers/{customer.id}/timeline?limit=2").get_json()
    first = body["items"][0]
    assert first["type"] == "ledger" and first["kind"] == "released" and first["note"] == "明年一季度再联系"
    assert first["from_user"] == "小王" and first["pool"] == pool.name and first["holding_followups"] == 0
    rest = client.get(f"/api/v1/customers/{customer.id}/timeline?before={body['next_cursor']}").get_json()
    assert [i["kind"] for i in rest["items"]] == ["created"] and rest["next_cursor"] is None
    assert client.get(f"/api/v1/customers/{customer.id}/timeline?before=xx").status_code == 400


def test_customers_list_api(api, make, rep):
    make.customer(make.pool(), owner=rep, name="甲")
    body = api(make.token(rep)).get("/api/v1/customers").get_json()
    assert [c["name"] for c in body["items"]] == ["甲"] and body["has_more"] is False


def test_users_api_list_create_patch_and_handover(api, make, admin, rep, manager):
    client = api(make.token(admin, "read write admin"))
    users = client.get("/api/v1/users").get_json()["users"]
    assert {u["name"] for u in users} >= {"小王", "王主管", "管理员"}
    team_view = api(make.token(manager)).get("/api/v1/users").get_json()["users"]
    assert {u["name"] for u in team_view} == {"小王", "王主管"}
    assert api(make.token(rep)).get("/api/v1/users").status_code == 403
    resp = client.post("/api/v1/users", json={"email": "new@test.cn", "name": "新人", "password": "long-enough-1",
                                               "role": "rep", "team_id": rep.team_id, "regions": ["华东", "华南"]})  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    new_id = resp.get_json()["id"]
    assert resp.get_json()["regions"] == ["华东", "华南"]
    assert (
        client.post(
            "/api/v1/users", json={"email": "new@test.cn", "name": "x", "password": "long-enough-1"}
        ).status_code
        == 422
    )
    away = (clock.now() + timedelta(days=5)).isoformat()
    resp = client.patch(f"/api/v1/users/{new_id}", json={"away_until": away, "role": "manager"})
    assert resp.status_code == 200 and resp.get_json()["role"] == "manager" and resp.get_json()["away_until"]
    pool = make.pool(members=[rep])
    held = [make.customer(pool, owner=rep).id for _ in range(2)]
    resp = client.patch(f"/api/v1/users/{rep.id}", json={"active": False, "move_customers_to": "pool"})
    body = resp.get_json()
    assert (
        resp.status_code == 200
        and body["active"] is False
        and sorted(body["handover"]["moved"]) == sorted(held)
    )
    assert db.session.get(User, rep.id).active is False
    for bad in ({"active": "no"}, {"role": "king"}, {"level_id": 999}, {"bogus": 1}, {"move_customers_to": "x"},
                {"away_until": "tomorrow"}):  # fmt: skip
        assert client.patch(f"/api/v1/users/{new_id}", json=bad).status_code == 422, bad
    assert client.patch("/api/v1/users/99999", json={}).status_code == 404
    assert client.patch(f"/api/v1/users/{admin.id}", json={"active": False}).status_code == 422


def test_user_handover_refusal_saves_nothing(api, make, admin, rep):
    small = make.user(Role.REP, cap=1)
    pool = make.pool(members=[rep])
    for _ in range(2):
        make.customer(pool, owner=rep)
    client = api(make.token(admin, "read write admin"))
    resp = client.patch(f"/api/v1/users/{rep.id}", json={"active": False, "move_customers_to": small.id})
    assert resp.status_code == 422 and resp.get_json()["error"] == "holding_cap"
    db.session.expire_all()
    assert db.session.get(User, rep.id).active is True


def test_openapi_documents_the_pool_endpoints_and_error_codes(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    for path in ("/pools", "/pools/{pool_id}", "/pools/{pool_id}/customers", "/customers/{customer_id}",
                 "/customers/{customer_id}/timeline", "/customers/{customer_id}/claim", "/customers/assign",
                 "/customers/{customer_id}/release", "/customers/{customer_id}/assign", "/users", "/users/{user_id}"):  # fmt: skip
        assert path in doc["paths"], path
    claim = doc["paths"]["/customers/{customer_id}/claim"]["post"]
    assert (
        "taken" in claim["responses"]["409"]["description"]
        and "daily_limit" in claim["responses"]["429"]["description"]
    )
    release = doc["paths"]["/customers/{customer_id}/release"]["post"]
    assert set(release["requestBody"]["content"]["application/json"]["schema"]["required"]) == {
        "reason",
        "note",
    }
