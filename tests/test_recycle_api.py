"""Recycle JSON API and CLI: rules GET/PUT/preview with validation and confirmation, nurture, protection,
extension requests, holidays, the customer's due info, ``crm sweep``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import EventKind, Holiday, Pool, RecycleRule, Role, RuleKind, SettingsAudit
from crm.recycle.routes import customer_json
from tests.recycle_support import add_rule, fresh, ledger, sh

T0 = sh(2026, 3, 2, 9, 0)
DAY = timedelta(days=1)


@pytest.fixture
def world(make):
    with clock.frozen(T0):
        manager = make.user(Role.MANAGER, name="王主管")
        rep = make.user(Role.REP, name="小王", manager=manager)
        admin = make.user(Role.ADMIN)
        pool = make.pool("新线索池", members=[rep], admins=[manager])
        other = make.pool("沉默客户池")
    return {"manager": manager, "rep": rep, "admin": admin, "pool": pool, "other": other,
            "tokens": {u: make.token(u, "read write admin" if u is admin else "read write")
                       for u in (manager, rep, admin)}}  # fmt: skip


def _api(api, world, who):
    return api(world["tokens"][world[who]])


def test_put_and_get_the_whole_rule_list_is_audited(api, world):
    m = _api(api, world, "manager")
    pool_id = world["pool"].id
    body = {"rules": [
        {"kind": "no_first_contact", "hours": 48, "warn_days": 1},
        {"kind": "no_followup", "days": 7, "day_kind": "working", "grades": ["A", "B"], "warn_days": 2,
         "escalate_days": 1, "target_pool_id": world["other"].id},
    ]}  # fmt: skip
    with clock.frozen(T0):
        resp = m.put(f"/api/v1/pools/{pool_id}/rules", json=body)
    assert resp.status_code == 200, resp.json
    rules = m.get(f"/api/v1/pools/{pool_id}/rules").json["rules"]
    assert [r["label"] for r in rules] == ["领取 48 小时未首次联系", "7 个工作日未跟进"]
    assert rules[1]["grades"] == ["A", "B"] and rules[1]["exclude_protected"] is True
    # Keep the second by id, drop the first: the dropped rule is removed from the list.
    keep = {k: v for k, v in rules[1].items() if k != "label"}
    keep["days"] = 5
    assert m.put(f"/api/v1/pools/{pool_id}/rules", json={"rules": [keep]}).status_code == 200
    after = m.get(f"/api/v1/pools/{pool_id}/rules").json["rules"]
    assert [(r["id"], r["days"]) for r in after] == [(rules[1]["id"], 5)]
    audit = db.session.scalars(select(SettingsAudit).where(SettingsAudit.section == "recycle_rules")).all()
    assert len(audit) == 2 and "5 个工作日未跟进" in audit[-1].summary


@pytest.mark.parametrize(
    "rule, field",
    [
        ({"kind": "no_followup", "days": -3}, "days"),
        ({"kind": "no_followup", "days": "seven"}, "days"),
        ({"kind": "no_followup"}, "days"),
        ({"kind": "whenever", "days": 7}, "kind"),
        ({"kind": "no_followup", "days": 7, "warn_days": 1, "escalate_days": 2}, "escalate_days"),
        ({"kind": "no_followup", "days": 7, "warn_days": 7}, "warn_days"),
        ({"kind": "no_first_contact"}, "hours"),
    ],
)
def test_nonsense_rule_values_are_refused_and_nothing_is_saved(api, world, rule, field):
    m = _api(api, world, "manager")
    resp = m.put(f"/api/v1/pools/{world['pool'].id}/rules", json={"rules": [rule]})
    assert resp.status_code == 422
    assert resp.json["error"] == "invalid" and field in resp.json["fields"]["0"]
    assert resp.json["message"]
    assert db.session.scalar(select(RecycleRule.id)) is None


def test_rule_pointing_at_a_deleted_pool_is_refused(api, world):
    other = db.session.get(Pool, world["other"].id)
    other.deleted_at = T0
    db.session.commit()
    resp = _api(api, world, "manager").put(
        f"/api/v1/pools/{world['pool'].id}/rules",
        json={"rules": [{"kind": "no_followup", "days": 7, "target_pool_id": other.id}]},
    )
    assert resp.status_code == 422 and "目标公海不存在或已删除" in resp.json["message"]
    assert db.session.scalar(select(RecycleRule.id)) is None


def test_rule_change_that_would_recycle_at_once_needs_the_count_confirmed(api, make, world):
    with clock.frozen(T0):
        for _ in range(4):
            make.customer(world["pool"], owner=world["rep"], claimed_at=T0 - 10 * DAY)
    m = _api(api, world, "manager")
    url = f"/api/v1/pools/{world['pool'].id}/rules"
    body = {"rules": [{"kind": "no_followup", "days": 7}]}
    with clock.frozen(T0):
        first = m.put(url, json=body)
        assert (
            first.status_code == 409
            and first.json["error"] == "confirm_required"
            and first.json["count"] == 4
        )
        assert db.session.scalar(select(RecycleRule.id)) is None
        assert m.put(url, json={**body, "confirm": 3}).status_code == 409
        assert m.put(url, json={**body, "confirm": 4}).status_code == 200


def test_preview_takes_a_json_body_or_the_rules_query(api, make, world):
    with clock.frozen(T0):
        make.customer(world["pool"], owner=world["rep"], claimed_at=T0 - 10 * DAY)
        make.customer(world["pool"], owner=world["rep"], claimed_at=T0 - 6 * DAY)
        make.customer(world["pool"], owner=world["rep"], claimed_at=T0 - 2 * DAY)
    m = _api(api, world, "manager")
    url = f"/api/v1/pools/{world['pool'].id}/rules/preview"
    rules = [{"kind": "no_followup", "days": 7, "warn_days": 2}]
    with clock.frozen(T0):
        by_body = m.get(url, json={"rules": rules}).json
        by_query = m.get(url, query_string={"rules": json.dumps(rules)}).json
    assert by_body["recycle_now"] == by_query["recycle_now"] == 1
    assert by_body["warned_now"] == 1
    days = {d["date"]: d["count"] for d in by_body["days"]}
    assert days["2026-03-03"] == 1 and days["2026-03-07"] == 1
    assert by_body["sample"][0]["when"] == "立即"
    assert db.session.scalar(select(RecycleRule.id)) is None  # read-only
    assert m.get(url, query_string={"rules": "[{"}).status_code == 400


def test_rules_are_for_admins_and_pool_admins_only(api, world):
    assert _api(api, world, "rep").get(f"/api/v1/pools/{world['pool'].id}/rules").status_code == 403
    assert _api(api, world, "admin").get(f"/api/v1/pools/{world['pool'].id}/rules").status_code == 200
    stranger = _api(api, world, "manager").get(f"/api/v1/pools/{world['other'].id}/rules")
    assert stranger.status_code == 403 and stranger.json["error"] == "forbidden"


def test_extension_request_approve_and_reject_flow(api, make, world):
    add_rule(world["pool"], RuleKind.NO_FOLLOWUP, days=7)
    with clock.frozen(T0):
        customer = make.customer(world["pool"], owner=world["rep"], claimed_at=T0)
    r, m = _api(api, world, "rep"), _api(api, world, "manager")
    with clock.frozen(T0 + 5 * DAY):
        bad = r.post(f"/api/v1/customers/{customer.id}/extension-requests", json={"days": 0, "reason": "x"})
        assert bad.status_code == 422
        made = r.post(
            f"/api/v1/customers/{customer.id}/extension-requests", json={"days": 3, "reason": "客户出差"}
        )
        assert made.status_code == 201 and made.json["status"] == "pending"
        again = r.post(
            f"/api/v1/customers/{customer.id}/extension-requests", json={"days": 2, "reason": "再申请"}
        )
        assert again.status_code == 409
        assert [x["id"] for x in m.get("/api/v1/extension-requests").json["requests"]] == [made.json["id"]]
        assert r.post(f"/api/v1/extension-requests/{made.json['id']}/approve").status_code == 403
        ok = m.post(f"/api/v1/extension-requests/{made.json['id']}/approve", json={"note": "同意"})
        assert ok.status_code == 200 and ok.json["status"] == "approved"
        assert m.post(f"/api/v1/extension-requests/{made.json['id']}/reject").status_code == 409
        due = r.get(f"/api/v1/customers/{customer.id}/recycle").json
    assert datetime.fromisoformat(due["due_at"]) == T0 + 10 * DAY and due["extension_days"] == 3
    assert [e.kind for e in ledger(customer.id)][-2:] == [EventKind.EXTENSION_REQUESTED, EventKind.EXTENDED]
    with clock.frozen(T0 + 6 * DAY):
        second = r.post(
            f"/api/v1/customers/{customer.id}/extension-requests", json={"days": 2, "reason": "还要等"}
        )
        rejected = m.post(f"/api/v1/extension-requests/{second.json['id']}/reject", json={"note": "先跟进"})
    assert rejected.json["status"] == "rejected" and fresh(customer).extension_days == 3
    assert ledger(customer.id)[-1].kind == EventKind.EXTENSION_REJECTED


def test_nurture_and_protect_endpoints(api, make, world):
    add_rule(world["pool"], RuleKind.NO_FOLLOWUP, days=7)
    with clock.frozen(T0):
        customer = make.customer(world["pool"], owner=world["rep"], claimed_at=T0)
    r, m = _api(api, world, "rep"), _api(api, world, "manager")
    url = f"/api/v1/customers/{customer.id}/nurture"
    with clock.frozen(T0):
        world["pool"].nurture_allowed = False
        db.session.commit()
        assert (
            r.post(url, json={"until": "2026-04-01"}).json["error"] == "invalid"
        )  # the pool does not allow it
        world["pool"].nurture_allowed = True
        db.session.commit()
        assert r.post(url, json={"until": "2027-01-01"}).status_code == 422  # past nurture_max_days (90)
        assert r.post(url, json={"until": "not a date"}).status_code == 422
        done = r.post(url, json={"until": "2026-04-01"})
        assert done.status_code == 200
        assert done.json["recycle"]["rule"]["label"] == "长期培育到期"
        assert datetime.fromisoformat(done.json["recycle"]["due_at"]) == sh(2026, 4, 1)
        assert (
            r.post(f"/api/v1/customers/{customer.id}/protect", json={"until": "2026-05-01"}).status_code
            == 403
        )
        prot = m.post(f"/api/v1/customers/{customer.id}/protect", json={"until": "2026-05-01"})
    assert prot.status_code == 200 and datetime.fromisoformat(prot.json["protected_until"]) == sh(2026, 5, 2)
    kinds = [e.kind for e in ledger(customer.id)]
    assert EventKind.NURTURED in kinds and EventKind.PROTECTED in kinds


def test_customer_json_hook_gives_due_time_rule_and_state(make, world):
    add_rule(world["pool"], RuleKind.NO_FOLLOWUP, days=7, warn_days=2)
    with clock.frozen(T0):
        customer = make.customer(world["pool"], owner=world["rep"], claimed_at=T0)
    from crm.recycle.sweep import sweep

    sweep(db.session, T0 + 5 * DAY)
    with clock.frozen(T0 + 5 * DAY):
        data = customer_json(db.session, fresh(customer), world["rep"])["recycle"]
    assert data["summary"] == "7 天未跟进 → 2026-03-09 09:00 回收, 预警已发"
    assert data["state"] == "warned" and data["rule"]["kind"] == "no_followup"


def test_holidays_put_replaces_the_calendar_and_a_bad_date_saves_nothing(api, world):
    a = _api(api, world, "admin")
    before = a.get("/api/v1/settings/holidays", query_string={"year": 2026}).json["holidays"]
    assert {"date": "2026-10-10", "is_workday": True, "name": "国庆节调休上班"} in before
    bad = a.put("/api/v1/settings/holidays", json={"holidays": [
        {"date": "2026-10-01", "is_workday": False, "name": "国庆节"}, {"date": "2026-02-30", "name": "坏"}]})  # fmt: skip
    assert bad.status_code == 422 and "2026-02-30" in bad.json["message"]
    assert len(a.get("/api/v1/settings/holidays").json["holidays"]) == db.session.query(Holiday).count() > 30
    good = a.put(
        "/api/v1/settings/holidays", json=[{"date": "2026-10-01", "is_workday": False, "name": "国庆节"}]
    )
    assert good.status_code == 200 and len(good.json["holidays"]) == 1
    assert _api(api, world, "manager").get("/api/v1/settings/holidays").status_code == 403


def test_cli_sweep_prints_a_summary_and_refuses_a_bad_timestamp(app, make, world):
    add_rule(world["pool"], RuleKind.NO_FOLLOWUP, days=7)
    with clock.frozen(T0):
        make.customer(world["pool"], owner=world["rep"], claimed_at=T0)
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["crm", "sweep", "--as-of", "next tuesday"])
    assert bad.exit_code != 0 and "--as-of is not an ISO 8601 timestamp" in bad.output
    dry = runner.invoke(args=["crm", "sweep", "--as-of", "2026-03-09T09:00:00+08:00", "--dry-run"])
    assert dry.exit_code == 0 and "回收 1" in dry.output and "演练" in dry.output
    real = runner.invoke(args=["crm", "sweep", "--as-of", "2026-03-09T09:00:00+08:00"])
    assert real.exit_code == 0 and "回收 1" in real.output and "7 天未跟进: 1" in real.output
