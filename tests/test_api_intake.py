"""``POST /api/v1/leads`` and ``POST /api/v1/events``: answers, bad input, token scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import BehaviorEvent, Customer, PoolEvent

LEAD = {
    "name": "广州蓝海电子有限公司",
    "contact_name": "陈经理",
    "phone": "+86 138-0013-8000",
    "email": "chen@lanhai.cn",
    "industry": "制造业",
    "company_size": "100-499人",
    "channel": "百度推广",
    "campaign": "双十一投放",
    "utm": {"utm_source": "baidu", "utm_medium": "cpc"},
}


@pytest.fixture
def pool(make, manager, rep):
    # The rep is a member: a token may post events only on customers its user may see.
    return make.pool("新线索池", kind="lead", admins=[manager], members=[rep])


@pytest.fixture
def leads_token(make, rep):
    return make.token(rep, "leads")


@pytest.fixture
def write_token(make, rep):
    """A ``write`` token (implies ``leads``): its answers carry the owner, pool and duplicates."""
    return make.token(rep, "write")


def test_posting_a_lead_answers_201_with_the_new_id(api, write_token, pool):
    resp = api(write_token).post("/api/v1/leads", json=LEAD)
    assert resp.status_code == 201
    body = resp.json
    customer = db.session.get(Customer, body["id"])
    assert body["status"] == "created" and body["pool_id"] == pool.id and body["owner_id"] is None
    assert body["score"] == customer.score and body["grade"] == customer.grade
    assert customer.company_size == 100 and customer.utm == {"utm_source": "baidu", "utm_medium": "cpc"}
    assert customer.source == "api" and customer.channel == "百度推广"
    assert (
        db.session.scalar(select(PoolEvent.actor_id).where(PoolEvent.customer_id == customer.id)) is not None
    )


def test_posting_the_same_lead_again_answers_200_with_the_existing_customer(api, write_token, pool):
    first = api(write_token).post("/api/v1/leads", json=LEAD).json
    again = api(write_token).post("/api/v1/leads", json={"contact_name": "陈", "phone": "13800138000"})
    assert again.status_code == 200
    assert again.json == again.json | {"id": first["id"], "status": "duplicate", "matched_on": "phone"}
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


def test_an_iso_arrival_time_with_offset_is_kept(api, leads_token, pool):
    resp = api(leads_token).post("/api/v1/leads", json=LEAD | {"arrived_at": "2026-01-05T09:30:00+08:00"})
    customer = db.session.get(Customer, resp.json["id"])
    assert customer.arrived_at == datetime(2026, 1, 5, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"),
    [
        ({"notes": "只有备注"}, 422, "invalid", "name"),
        ({"name": "某公司"}, 422, "invalid", "phone"),
        ({"name": "某公司", "phone": "12345"}, 422, "invalid", "phone"),
        ({"name": "某公司", "phone": "62888888"}, 422, "invalid", "phone"),
        ({"name": "某公司", "email": "not-an-email"}, 422, "invalid", "email"),
        ({"name": "某" * 121, "phone": "13800138000"}, 422, "invalid", "name"),
        ({"name": "某公司", "phone": "13800138000", "utm": "baidu"}, 422, "invalid", "utm"),
        ({"name": "某公司", "phone": "13800138000", "pool_id": 9999}, 404, "pool_not_found", None),
    ],
)
def test_bad_leads_get_a_clear_error_and_change_nothing(api, leads_token, pool, payload, status, code, field):
    resp = api(leads_token).post("/api/v1/leads", json=payload)
    assert resp.status_code == status
    assert resp.json["error"] == code and resp.json["message"]
    if field:
        assert field in resp.json["fields"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_malformed_json_is_a_400(api, leads_token, pool):
    resp = api(leads_token).post(
        "/api/v1/leads", data="{name: 1", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json["error"] == "malformed_json"
    resp = api(leads_token).post("/api/v1/leads", json="just a string")
    assert resp.status_code == 400 and resp.json["error"] == "malformed_json"


def test_a_wrong_token_is_a_401(api, pool):
    resp = api("crm_not-a-real-token").post("/api/v1/leads", json=LEAD)
    assert resp.status_code == 401 and resp.json["error"] == "unauthorized"
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_leads_only_token_feeds_leads_and_events_but_cannot_read(api, leads_token, pool):
    client = api(leads_token)
    created = client.post("/api/v1/leads", json=LEAD)
    assert created.status_code == 201
    # It learns its lead's id and status, nothing about owners, pools or other customers.
    assert set(created.json) == {"id", "status"}
    again = client.post("/api/v1/leads", json=LEAD)
    assert again.status_code == 200 and again.json == {"status": "duplicate"}
    event = client.post("/api/v1/events", json={"customer_id": created.json["id"], "type": "download"})
    assert event.status_code == 201
    me = client.get("/api/v1/me")
    assert me.status_code == 403 and me.json["error"] == "insufficient_scope"


def test_a_read_only_token_cannot_post_leads(api, make, rep, pool):
    resp = api(make.token(rep, "read")).post("/api/v1/leads", json=LEAD)
    assert resp.status_code == 403 and resp.json["error"] == "insufficient_scope"


def test_a_write_token_may_post_leads(api, make, rep, pool):
    assert api(make.token(rep, "read write")).post("/api/v1/leads", json=LEAD).status_code == 201


def test_reps_cannot_post_into_a_pool_they_cannot_see(api, make, leads_token, pool):
    private = make.pool("华南区域池")
    resp = api(leads_token).post("/api/v1/leads", json=LEAD | {"pool_id": private.id})
    assert resp.status_code == 403


# ---------------------------------------------------------------- events


@pytest.fixture
def customer(make, pool):
    return make.customer(pool, phone="13700137000", email="buyer@x.cn", email_key="buyer@x.cn", score=0)


def test_an_event_rescores_the_customer(api, leads_token, customer):
    resp = api(leads_token).post("/api/v1/events", json={"customer_id": customer.id, "type": "form_submit"})
    assert resp.status_code == 201
    db.session.refresh(customer)
    assert resp.json["score"] == customer.score
    assert {line["f"] for line in customer.score_breakdown["lines"]} >= {"form_submit"}


def test_an_event_finds_its_customer_by_phone_or_email(api, leads_token, customer):
    by_phone = api(leads_token).post("/api/v1/events", json={"phone": "137-0013-7000", "type": "page_view"})
    by_email = api(leads_token).post("/api/v1/events", json={"email": "Buyer@X.cn", "type": "email_open"})
    assert by_phone.json["customer_id"] == by_email.json["customer_id"] == customer.id


def test_the_same_external_id_is_recorded_once(api, leads_token, customer):
    body = {"customer_id": customer.id, "type": "ad_click", "external_id": "click-42"}
    first = api(leads_token).post("/api/v1/events", json=body)
    second = api(leads_token).post("/api/v1/events", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json["duplicate"] is True and second.json["id"] == first.json["id"]
    assert db.session.scalar(select(func.count()).select_from(BehaviorEvent)) == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"type": "download"}, 422, "invalid"),
        ({"customer_id": 424242, "type": "download"}, 404, "customer_not_found"),
        ({"phone": "13000000000", "type": "download"}, 404, "customer_not_found"),
        ({"phone": "123", "type": "download"}, 422, "invalid"),
        ({"customer_id": 1, "type": "phone_call"}, 422, "invalid"),
    ],
)
def test_bad_events_get_a_clear_error(api, leads_token, customer, payload, status, code):
    resp = api(leads_token).post("/api/v1/events", json=payload)
    assert resp.status_code == status and resp.json["error"] == code
    assert db.session.scalar(select(func.count()).select_from(BehaviorEvent)) == 0


def test_an_event_from_the_future_is_refused(api, leads_token, customer):
    future = (clock.now() + timedelta(days=1)).isoformat()
    resp = api(leads_token).post(
        "/api/v1/events", json={"customer_id": customer.id, "type": "download", "at": future}
    )
    assert resp.status_code == 422 and "at" in resp.json["fields"]


def test_the_openapi_document_lists_leads_and_events_with_the_leads_scope(client):
    doc = client.get("/api/v1/openapi.json").json
    assert doc["paths"]["/leads"]["post"]["x-scope"] == "leads"
    assert doc["paths"]["/events"]["post"]["x-scope"] == "leads"
    assert (
        "phone"
        in doc["paths"]["/leads"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )


def test_a_batch_of_leads_is_taken_in_one_call_with_a_result_each(api, write_token, pool):
    batch = [
        LEAD,
        {"name": "坏电话公司", "phone": "12345"},
        {"contact_name": "陈", "phone": "13800138000"},  # the first one again
        "not an object",
        {"name": "宁波远航物流有限公司", "email": "info@yh.cn"},
    ]
    resp = api(write_token).post("/api/v1/leads", json=batch)
    assert resp.status_code == 200
    results = resp.json["results"]
    assert [r["status"] for r in results] == ["created", "invalid", "duplicate", "invalid", "created"]
    assert results[2]["id"] == results[0]["id"] and "phone" in results[1]["fields"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


def test_an_empty_or_oversized_batch_is_refused(api, leads_token, pool):
    assert api(leads_token).post("/api/v1/leads", json=[]).status_code == 422
    too_many = [{"contact_name": "x", "phone": f"138{i:08d}"} for i in range(1001)]
    resp = api(leads_token).post("/api/v1/leads", json=too_many)
    assert resp.status_code == 422 and resp.json["error"] == "too_many"
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
