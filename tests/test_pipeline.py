"""Stages as actions (crm/pipeline/services.py) through the JSON API and the service: each requirement is
refused when missing and accepted when present; bad input changes nothing; permissions; 一转三 atomicity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import (
    Activity,
    Contact,
    Contract,
    Customer,
    FollowUp,
    Lifecycle,
    Opportunity,
    Quote,
    StageChange,
)
from crm.pipeline import services
from tests.pipeline_support import count, stage


@pytest.fixture
def owned(make, rep):
    pool = make.pool(members=[rep])
    return make.customer(pool, owner=rep, contact_name="李经理", lifecycle=Lifecycle.LEAD)


@pytest.fixture
def opp(owned, rep):
    o = services.create_opportunity(
        db.session, owned, rep, clock.now(), services.OpportunityInput("年度采购", None, None)
    )
    db.session.commit()
    return o


def snapshot(customer_id: int) -> tuple:
    db.session.expire_all()
    c = db.session.get(Customer, customer_id)
    opps = db.session.execute(
        select(Opportunity.id, Opportunity.stage_id, Opportunity.status, Opportunity.amount).order_by(
            Opportunity.id
        )
    ).all()
    return (c.stage_id, c.last_stage_change_at, c.won_at, c.lifecycle, tuple(opps), count(StageChange),
            count(Quote), count(Contract), count(FollowUp), count(Contact), count(Activity))  # fmt: skip


def future(days: int = 3) -> str:
    return (clock.now() + timedelta(days=days)).isoformat()


def today(days: int = 0) -> str:
    return (clock.local_today() + timedelta(days=days)).isoformat()


QUOTE = {
    "stage": "已报价",
    "items": [{"name": "CRM 标准版", "qty": 10, "price": 1200}],
    "valid_until": today(30),
}
FOLLOW = {"stage": "有意向", "channel": "phone", "content": "客户确认有采购需求", "next_plan": "发方案",
          "next_contact_at": future()}  # fmt: skip
CONTRACT = {"stage": "成交", "contract_number": "HT-2026-001", "amount": 12000, "signed_on": today(),
            "invoice_title": "测试客户有限公司", "tax_id": "91310000MA1FL8XQ30"}  # fmt: skip
LOST = {"stage": "输单", "lost_reason": "价格太高"}


# ---------------------------------------------------------------- each requirement via the API


@pytest.mark.parametrize(
    "good, missing_key, message_part",
    [
        (QUOTE, "items", "报价"),
        (QUOTE, "valid_until", "报价有效期"),
        (FOLLOW, "next_contact_at", "下次联系时间"),
        (FOLLOW, "content", "跟进"),
        (CONTRACT, "contract_number", "合同编号"),
        (CONTRACT, "signed_on", "签约日期"),
        (CONTRACT, "invoice_title", "开票抬头"),
        (CONTRACT, "tax_id", "税号"),
        (CONTRACT, "amount", "合同金额"),
        (LOST, "lost_reason", "输单原因"),
    ],
)
def test_api_stage_requirement_refused_when_missing_then_accepted(api, make, rep, opp, good, missing_key,
                                                                   message_part):  # fmt: skip
    client = api(make.token(rep))
    before = snapshot(opp.customer_id)
    body = {k: v for k, v in good.items() if k != missing_key}
    resp = client.post(f"/api/v1/opportunities/{opp.id}/stage", json=body)
    assert resp.status_code == 422, resp.get_json()
    data = resp.get_json()
    assert data["error"] == "requirement"
    assert message_part in data["message"]
    assert snapshot(opp.customer_id) == before

    resp = client.post(f"/api/v1/opportunities/{opp.id}/stage", json=good)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["customer"]["stage"] == good["stage"]
    assert snapshot(opp.customer_id) != before


def test_quote_creates_quote_and_sets_amount(api, make, rep, opp):
    resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=QUOTE)
    assert resp.status_code == 200
    q = db.session.scalar(select(Quote))
    assert float(q.amount) == 12000.0 and q.items[0]["name"] == "CRM 标准版"
    assert resp.get_json()["opportunity"]["amount"] == 12000.0
    assert "报价" in resp.get_json()["stage_change"]["note"]


def test_followup_stage_records_a_real_touch(api, make, rep, opp):
    customer_id = opp.customer_id
    resp = api(make.token(rep)).post(f"/api/v1/customers/{customer_id}/stage", json=FOLLOW)
    assert resp.status_code == 200, resp.get_json()
    fu = db.session.scalar(select(FollowUp))
    assert fu.content == "客户确认有采购需求" and fu.next_contact_at is not None
    customer = db.session.get(Customer, customer_id)
    assert customer.last_followup_at is not None and customer.holding_followups >= 1


def test_contract_wins_deal_and_starts_protection(api, make, rep, opp):
    now = clock.now()
    with clock.frozen(now):
        resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=CONTRACT)
    assert resp.status_code == 200, resp.get_json()
    db.session.expire_all()
    o = db.session.get(Opportunity, opp.id)
    assert o.status == "won" and o.closed_at == now
    customer = db.session.get(Customer, opp.customer_id)
    assert customer.won_at == now and customer.lifecycle == Lifecycle.CUSTOMER
    contract = db.session.scalar(select(Contract))
    assert contract.number == "HT-2026-001" and contract.tax_id == "91310000MA1FL8XQ30"


def _no_followup_rule(customer, days: int = 3):
    from tests.recycle_support import add_rule

    return add_rule(customer.pool, "no_followup", days=days, exclude_protected=True)


def test_won_customer_is_not_recycled_within_protection(make, rep, opp):
    """The recycle sweep skips a customer that won a deal inside ``protect_days`` (it reads won_at)."""
    from crm.recycle.sweep import sweep

    now = clock.now()
    customer = db.session.get(Customer, opp.customer_id)
    customer.claimed_at = customer.last_followup_at = now - timedelta(days=60)
    _no_followup_rule(customer)
    db.session.commit()
    services.change_stage(db.session, opp, stage("成交"), rep, now, CONTRACT)
    db.session.commit()
    sweep(db.session, now + timedelta(days=5))
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Customer, opp.customer_id).owner_id == rep.id


def test_customer_without_deal_is_recycled_by_the_same_rule(make, rep, opp):
    """Control for the test above: without the won deal the same rule recycles the customer."""
    from crm.recycle.sweep import sweep

    now = clock.now()
    customer = db.session.get(Customer, opp.customer_id)
    customer.claimed_at = customer.last_followup_at = now - timedelta(days=60)
    _no_followup_rule(customer)
    db.session.commit()
    sweep(db.session, now + timedelta(days=5))
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Customer, opp.customer_id).owner_id is None


def test_lost_records_reason_and_closes(api, make, rep, opp):
    resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code == 200
    db.session.expire_all()
    o = db.session.get(Opportunity, opp.id)
    assert o.status == "lost" and o.lost_reason == "价格太高" and o.closed_at is not None


# ---------------------------------------------------------------- bad input


def test_skipping_to_deal_without_contract_is_refused(api, make, rep, opp):
    before = snapshot(opp.customer_id)
    resp = api(make.token(rep)).post(f"/api/v1/customers/{opp.customer_id}/stage", json={"stage": "成交"})
    assert resp.status_code == 422
    assert "合同" in resp.get_json()["message"]
    assert snapshot(opp.customer_id) == before


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"items": [{"name": "A", "qty": 1, "price": -5}]}, "items"),
        ({"items": [{"name": "A", "qty": 0, "price": 5}]}, "items"),
        ({"items": [{"name": "", "qty": 1, "price": 5}]}, "items"),
        ({"amount": -100}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"valid_until": "2001-01-01"}, "valid_until"),
    ],
)
def test_bad_quote_is_refused(api, make, rep, opp, patch, field):
    before = snapshot(opp.customer_id)
    resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=QUOTE | patch)
    assert resp.status_code == 422
    assert field in resp.get_json()["fields"]
    assert snapshot(opp.customer_id) == before


@pytest.mark.parametrize(
    "patch, text",
    [({"amount": -1}, "大于 0"), ({"tax_id": "123"}, "税号格式"), ({"tax_id": "9131-0000-中文"}, "税号格式"),
     ({"signed_on": today(5)}, "晚于今天")],
)  # fmt: skip
def test_bad_contract_is_refused(api, make, rep, opp, patch, text):
    before = snapshot(opp.customer_id)
    resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=CONTRACT | patch)
    assert resp.status_code == 422 and text in resp.get_json()["message"]
    assert snapshot(opp.customer_id) == before


def test_lost_reason_not_in_list_is_refused(api, make, rep, opp):
    before = snapshot(opp.customer_id)
    resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json={"stage": "输单",
                                                                               "lost_reason": "看心情"})  # fmt: skip
    assert resp.status_code == 422
    assert "不在可选列表" in resp.get_json()["message"]
    assert snapshot(opp.customer_id) == before


def test_duplicate_contract_number_is_refused(api, make, rep, opp, owned):
    client = api(make.token(rep))
    assert client.post(f"/api/v1/opportunities/{opp.id}/stage", json=CONTRACT).status_code == 200
    other = services.create_opportunity(
        db.session, owned, rep, clock.now(), services.OpportunityInput("二期")
    )
    db.session.commit()
    before = snapshot(owned.id)
    resp = client.post(f"/api/v1/opportunities/{other.id}/stage", json=CONTRACT)
    assert resp.status_code == 409
    assert "HT-2026-001" in resp.get_json()["message"] and "已存在" in resp.get_json()["message"]
    assert snapshot(owned.id) == before


def test_won_opportunity_cannot_move_again(api, make, rep, opp):
    client = api(make.token(rep))
    client.post(f"/api/v1/opportunities/{opp.id}/stage", json=CONTRACT)
    resp = client.post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code == 422 and "已成交" in resp.get_json()["message"]


def test_lost_opportunity_can_be_reopened(rep, opp):
    services.change_stage(db.session, opp, stage("输单"), rep, clock.now(), LOST)
    services.change_stage(db.session, opp, stage("谈判中"), rep, clock.now(), FOLLOW)
    assert opp.stage.name == "谈判中"
    assert opp.status == "open" and opp.closed_at is None and opp.lost_reason is None


def test_unknown_and_inactive_stage_are_refused(api, make, rep, opp):
    client = api(make.token(rep))
    assert client.post(f"/api/v1/opportunities/{opp.id}/stage", json={"stage": "不存在"}).status_code == 422
    stage("谈判中").active = False
    db.session.commit()
    resp = client.post(f"/api/v1/opportunities/{opp.id}/stage", json=FOLLOW | {"stage": "谈判中"})
    assert resp.status_code == 422 and "停用" in resp.get_json()["message"]


# ---------------------------------------------------------------- clocks and timeline


def test_stage_change_resets_stage_clock_and_shows_on_timeline(api, make, rep, opp, rep_client):
    customer_id = opp.customer_id
    old = db.session.get(Customer, customer_id).last_stage_change_at
    later = clock.now() + timedelta(hours=2)
    with clock.frozen(later):
        resp = api(make.token(rep)).post(f"/api/v1/opportunities/{opp.id}/stage", json=QUOTE)
    assert resp.status_code == 200
    customer = db.session.get(Customer, customer_id)
    assert customer.last_stage_change_at == later and customer.last_stage_change_at != old
    assert customer.stage.name == "已报价"
    timeline = api(make.token(rep)).get(f"/api/v1/customers/{customer_id}/timeline").get_json()["items"]
    stage_items = [i for i in timeline if i["type"] == "stage"]
    assert stage_items[0]["to_stage"] == "已报价" and stage_items[0]["from_stage"] == "新线索"
    html = rep_client.get(f"/customers/{customer_id}/timeline").get_data(as_text=True)
    assert "已报价" in html and "报价 ¥12,000.00" in html


def test_stage_change_restarts_no_stage_progress_rule(make, rep, owned, opp):
    """The recycle rule 'no stage progress' counts from the last stage change: the customer moved today
    stays; an identical customer that did not move is recycled by the same sweep."""
    from crm.recycle.sweep import sweep
    from tests.recycle_support import add_rule

    now = clock.now()
    stale = make.customer(owned.pool, owner=rep)
    for c in (owned, stale):
        c.claimed_at = c.last_stage_change_at = now - timedelta(days=40)
    add_rule(owned.pool, "no_stage_progress", days=30, exclude_protected=True)
    db.session.commit()
    services.change_stage(db.session, opp, stage("已报价"), rep, now, QUOTE)
    db.session.commit()
    assert db.session.get(Customer, owned.id).last_stage_change_at == now
    sweep(db.session, now + timedelta(minutes=1))
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Customer, owned.id).owner_id == rep.id
    assert db.session.get(Customer, stale.id).owner_id is None


# ---------------------------------------------------------------- permissions


def test_another_rep_cannot_move_my_opportunity(api, make, rep, opp):
    other = make.user(name="小李")
    before = snapshot(opp.customer_id)
    resp = api(make.token(other)).post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code in (403, 404)
    resp = api(make.token(other)).post(f"/api/v1/customers/{opp.customer_id}/stage", json=LOST)
    assert resp.status_code in (403, 404)
    with pytest.raises(services.StageError) as exc:
        services.change_stage(db.session, opp, stage("输单"), other, clock.now(), LOST)
    assert exc.value.code == "forbidden"
    assert snapshot(opp.customer_id) == before


def test_manager_and_admin_may_move_the_reps_opportunity(api, make, manager, admin, opp):
    assert (
        api(make.token(manager)).post(f"/api/v1/opportunities/{opp.id}/stage", json=QUOTE).status_code == 200
    )
    resp = api(make.token(admin)).post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code == 200


def test_read_only_token_cannot_move(api, make, rep, opp):
    resp = api(make.token(rep, "read")).post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code == 403


# ---------------------------------------------------------------- customer-level moves


def test_customer_without_opportunity_moves_itself(api, make, rep, owned):
    resp = api(make.token(rep)).post(
        f"/api/v1/customers/{owned.id}/stage", json=FOLLOW | {"stage": "初步沟通"}
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["opportunity"] is None
    assert db.session.get(Customer, owned.id).stage.name == "初步沟通"


def test_customer_quote_without_opportunity_opens_one(api, make, rep, owned):
    resp = api(make.token(rep)).post(f"/api/v1/customers/{owned.id}/stage", json=QUOTE)
    assert resp.status_code == 200
    assert resp.get_json()["opportunity"]["stage"]["name"] == "已报价"
    assert count(Opportunity) == 1


def test_customer_with_two_open_opportunities_must_name_one(api, make, rep, owned, opp):
    second = services.create_opportunity(
        db.session, owned, rep, clock.now(), services.OpportunityInput("二期")
    )
    db.session.commit()
    client = api(make.token(rep))
    assert client.post(f"/api/v1/customers/{owned.id}/stage", json=LOST).status_code == 422
    resp = client.post(f"/api/v1/customers/{owned.id}/stage", json=LOST | {"opportunity_id": second.id})
    assert resp.status_code == 200 and resp.get_json()["opportunity"]["id"] == second.id


# ---------------------------------------------------------------- opportunities and stages over the API


def test_create_list_and_edit_opportunities(api, make, rep, owned):
    client = api(make.token(rep))
    resp = client.post(
        f"/api/v1/customers/{owned.id}/opportunities", json={"name": "软件采购", "amount": 5000}
    )
    assert resp.status_code == 201
    opp_id = resp.get_json()["id"]
    assert resp.get_json()["stage"]["name"] == "新线索" and resp.get_json()["from_pool"] is True
    bad = client.post(f"/api/v1/customers/{owned.id}/opportunities", json={"name": "", "amount": -1})
    assert bad.status_code == 422
    listed = client.get(f"/api/v1/customers/{owned.id}/opportunities").get_json()["opportunities"]
    assert [o["id"] for o in listed] == [opp_id]
    resp = client.patch(f"/api/v1/opportunities/{opp_id}", json={"name": "软件采购二期", "amount": 8000})
    assert resp.status_code == 200 and resp.get_json()["name"] == "软件采购二期"
    assert client.get(f"/api/v1/customers/{owned.id}").get_json()["opportunities"][0]["amount"] == 8000.0


def test_stages_endpoint_lists_requirements_and_lost_reasons(api, make, rep):
    data = api(make.token(rep)).get("/api/v1/stages").get_json()
    names = [s["name"] for s in data["stages"]]
    assert names == ["新线索", "初步沟通", "有意向", "已报价", "谈判中", "成交", "输单"]
    assert {s["name"]: s["requirement"] for s in data["stages"]}["成交"] == "contract"
    assert "价格太高" in data["lost_reasons"]


def test_openapi_documents_pipeline_endpoints(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in ("/customers/{customer_id}/stage", "/opportunities/{opportunity_id}/stage",
                 "/customers/{customer_id}/opportunities", "/customers/{customer_id}/convert", "/stages"):  # fmt: skip
        assert path in paths, path


# ---------------------------------------------------------------- 一转三


def test_convert_lead_creates_account_contact_and_opportunity(api, make, rep, owned):
    resp = api(make.token(rep)).post(f"/api/v1/customers/{owned.id}/convert",
                                     json={"opportunity_name": "首单", "amount": 3000})  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["customer"]["lifecycle"] == "customer"
    assert body["contact"]["name"] == "李经理" and body["contact"]["is_primary"]
    assert body["opportunity"]["name"] == "首单"
    customer = db.session.get(Customer, owned.id)
    assert customer.lifecycle == Lifecycle.CUSTOMER
    assert db.session.scalar(select(Activity).where(Activity.kind == "converted")) is not None
    # A second conversion is refused.
    again = api(make.token(rep)).post(
        f"/api/v1/customers/{owned.id}/convert", json={"opportunity_name": "再来"}
    )
    assert again.status_code == 422 and "已经转化" in again.get_json()["message"]


def test_convert_is_atomic_when_the_last_step_fails(make, rep, owned, monkeypatch):
    before = snapshot(owned.id)

    def boom(*args, **kwargs):
        raise RuntimeError("opportunity insert failed")

    monkeypatch.setattr(services, "_new_opportunity", boom)
    with pytest.raises(RuntimeError):
        services.convert_lead(db.session, owned, rep, clock.now(), services.ConversionInput("首单"))
    db.session.commit()
    assert snapshot(owned.id) == before
    assert db.session.get(Customer, owned.id).lifecycle == Lifecycle.LEAD


def test_convert_refuses_pool_leads_and_other_reps(api, make, rep, owned):
    pool_lead = make.customer(owned.pool, contact_name="王总")
    client = api(make.token(rep))
    resp = client.post(f"/api/v1/customers/{pool_lead.id}/convert", json={"opportunity_name": "X"})
    assert resp.status_code in (403, 422)
    other = make.user(name="小赵")
    resp = api(make.token(other)).post(
        f"/api/v1/customers/{owned.id}/convert", json={"opportunity_name": "X"}
    )
    assert resp.status_code in (403, 404)
    assert db.session.get(Customer, owned.id).lifecycle == Lifecycle.LEAD


def test_convert_needs_a_contact_name(api, make, rep):
    pool = make.pool(members=[rep])
    lead = make.customer(pool, owner=rep, contact_name=None)
    resp = api(make.token(rep)).post(f"/api/v1/customers/{lead.id}/convert", json={"opportunity_name": "X"})
    assert resp.status_code == 422 and "联系人" in resp.get_json()["message"]
    assert count(Opportunity) == 0


def test_opportunities_follow_the_customer_to_its_new_owner(make, rep, manager, opp):
    from crm.pool import services as pool

    other = make.user(name="新人", team=rep.team)
    pool.transfer(db.session, [opp.customer_id], other, manager, clock.now())
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Customer, opp.customer_id).owner_id == other.id
    assert db.session.get(Opportunity, opp.id).owner_id == other.id


def test_manager_of_another_team_cannot_move(api, make, rep, manager, opp):
    outsider = make.user("manager", name="外组主管")
    make.team("二组", manager=outsider)
    db.session.commit()
    resp = api(make.token(outsider)).post(f"/api/v1/opportunities/{opp.id}/stage", json=LOST)
    assert resp.status_code in (403, 404)
    assert db.session.get(Opportunity, opp.id).status == "open"


def test_customer_level_move_is_recorded_without_opportunity(make, rep, owned):
    change = services.change_stage(db.session, owned, "输单", rep, clock.now(), LOST)
    db.session.commit()
    assert change.opportunity_id is None and change.from_stage.name == "新线索"
    assert db.session.get(Customer, owned.id).stage.name == "输单"


def test_seed_demo_leaves_a_pipeline_with_history(app):
    """``seed-demo`` fills the pipeline the dashboards read: open, won and lost opportunities with their
    stage history, quotes and contracts, and won customers carrying ``won_at``."""
    from crm.demo import seed_demo

    seed_demo(db.session, customers=150, seed=7, password="demo1234", now=clock.now())
    db.session.commit()
    statuses = dict(
        db.session.execute(select(Opportunity.status, func.count()).group_by(Opportunity.status)).all()
    )
    assert statuses.get("open", 0) > 0 and statuses.get("won", 0) > 0 and statuses.get("lost", 0) > 0
    assert count(StageChange) > sum(statuses.values())
    assert count(Quote) > 0 and count(Contract) == statuses["won"]
    won_customers = select(func.count()).select_from(Customer).where(Customer.won_at.is_not(None))
    assert db.session.scalar(won_customers) > 0
    lost = db.session.scalars(select(Opportunity.lost_reason).where(Opportunity.status == "lost")).all()
    assert all(reason in services.DEFAULT_LOST_REASONS for reason in lost)
    # Touch clocks never run backwards: the last follow-up is the latest genuine one.
    for c in db.session.scalars(select(Customer).where(Customer.last_followup_at.is_not(None)).limit(50)):
        latest = db.session.scalar(select(func.max(FollowUp.at)).where(FollowUp.customer_id == c.id))
        assert latest is None or c.last_followup_at >= latest - timedelta(seconds=1)
