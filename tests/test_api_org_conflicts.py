"""API gaps: teams (list, create, edit, members), levels with holding caps and lock quotas, the conflict
queue (list, merge, mark distinct) — same services and permissions as the web, listed in OpenAPI."""

from __future__ import annotations

from crm.extensions import db
from crm.models import Customer, DuplicateConflict, Level, Role, Team


def _admin(api, make, admin):
    return api(make.token(admin, "read write admin"))


def test_teams_are_listed_created_edited_with_members(api, make, admin, manager, rep):
    client = _admin(api, make, admin)
    listed = client.get("/api/v1/teams").json["teams"]
    assert [(t["name"], t["member_count"]) for t in listed] == [("一组", 2)]
    boss = make.user(Role.MANAGER, name="李主管")
    created = client.post(
        "/api/v1/teams", json={"name": "二组", "manager_id": boss.id, "timezone": "Asia/Tokyo"}
    )
    assert created.status_code == 201, created.json
    team_id = created.json["id"]
    assert created.json["members"] == [{"id": boss.id, "name": "李主管", "role": "manager", "active": True}]
    assert client.post("/api/v1/teams", json={"name": "一组"}).status_code == 422  # name taken
    assert client.post("/api/v1/teams", json={"name": "三组", "timezone": "Mars/Base"}).status_code == 422
    edited = client.put(f"/api/v1/teams/{team_id}", json={"name": "华东二组", "manager_id": boss.id})
    assert edited.status_code == 200 and edited.json["timezone"] is None
    assert db.session.get(Team, team_id).name == "华东二组"
    one = client.get(f"/api/v1/teams/{manager.team_id}").json
    assert {m["id"] for m in one["members"]} == {manager.id, rep.id}


def test_levels_with_caps_and_lock_quotas(api, make, admin):
    client = _admin(api, make, admin)
    created = client.post(
        "/api/v1/levels", json={"name": "资深", "holding_cap": 30, "lock_quota": 5, "is_senior": True}
    )
    assert (
        created.status_code == 201 and created.json["lock_quota"] == 5 and created.json["holding_cap"] == 30
    )
    level_id = created.json["id"]
    assert (
        client.put(f"/api/v1/levels/{level_id}", json={"name": "资深", "holding_cap": 0}).status_code == 422
    )
    resp = client.put(f"/api/v1/levels/{level_id}", json={"name": "资深", "holding_cap": 25, "lock_quota": 3})
    assert resp.status_code == 200
    assert (db.session.get(Level, level_id).holding_cap, db.session.get(Level, level_id).lock_quota) == (
        25,
        3,
    )
    assert "资深" in [lv["name"] for lv in client.get("/api/v1/levels").json["levels"]]


def test_only_admins_use_the_org_and_conflict_endpoints(api, make, manager):
    client = api(make.token(manager, "read write"))
    for path in ("/api/v1/teams", "/api/v1/levels", "/api/v1/conflicts"):
        assert client.get(path).status_code == 403
    assert client.post("/api/v1/teams", json={"name": "x"}).status_code == 403


def test_the_conflict_queue_lists_merges_and_marks_distinct(api, make, admin):
    client = _admin(api, make, admin)
    pool = make.pool()
    old, new = make.customer(pool, name="星河科技有限公司"), make.customer(pool, name="星河科技有限责任公司")
    other_old, other_new = make.customer(pool, name="晨光"), make.customer(pool, name="晨光信息")
    first = make.conflict(new, old, 96.0)
    second = make.conflict(other_new, other_old, 88.0)
    listed = client.get("/api/v1/conflicts").json["conflicts"]
    assert {c["id"] for c in listed} == {first.id, second.id}
    merged = client.post(f"/api/v1/conflicts/{first.id}/merge", json={"keep": "candidate"})
    assert merged.status_code == 200 and merged.json["customer_id"] == old.id
    assert merged.json["conflict"]["status"] == "merged"
    db.session.expire_all()
    assert db.session.get(Customer, new.id).merged_into_id == old.id
    distinct = client.post(f"/api/v1/conflicts/{second.id}/distinct")
    assert distinct.status_code == 200 and distinct.json["conflict"]["status"] == "distinct"
    assert client.get("/api/v1/conflicts").json["conflicts"] == []
    assert len(client.get("/api/v1/conflicts?state=resolved").json["conflicts"]) == 2
    assert client.post(f"/api/v1/conflicts/{first.id}/merge", json={"keep": "nobody"}).status_code == 422
    assert client.get("/api/v1/conflicts?state=maybe").status_code == 422
    assert db.session.get(DuplicateConflict, second.id).status == "distinct"


def test_the_openapi_document_lists_the_new_endpoints(api, make, admin):
    paths = _admin(api, make, admin).get("/api/v1/openapi.json").json["paths"]
    for path in ("/teams", "/teams/{team_id}", "/levels", "/levels/{level_id}", "/conflicts",
                 "/conflicts/{conflict_id}/merge", "/conflicts/{conflict_id}/distinct",
                 "/customers/{customer_id}/lock", "/customers/{customer_id}/unlock", "/spot-checks",
                 "/spot-checks/{check_id}", "/notifications", "/notifications/read"):  # fmt: skip
        assert any(p.endswith(path) for p in paths), path
