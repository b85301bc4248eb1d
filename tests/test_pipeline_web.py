"""Pipeline screens: the customer-page panel, the stage-change form (each requirement refused when missing
and accepted when present, 422 with the error in place), 一转三, the kanban and the stage settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Contract, Customer, FollowUp, Lifecycle, Opportunity, Quote, Stage, StageChange
from crm.pipeline import services
from tests.pipeline_support import count, stage

HX = {"HX-Request": "true"}


@pytest.fixture
def owned(make, rep):
    pool = make.pool(members=[rep])
    return make.customer(pool, owner=rep, contact_name="李经理")


@pytest.fixture
def opp(owned, rep):
    o = services.create_opportunity(
        db.session, owned, rep, clock.now(), services.OpportunityInput("年度采购")
    )
    db.session.commit()
    return o


def local_in(days: int) -> str:
    return clock.to_local_naive(clock.now() + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")


def today(days: int = 0) -> str:
    return (clock.local_today() + timedelta(days=days)).isoformat()


FORMS = {
    "已报价": {"item_name": ["CRM 标准版", ""], "item_qty": ["10", ""], "item_price": ["1200", ""],
            "valid_until": today(30)},
    "有意向": {"channel": "phone", "content": "客户确认需求", "next_plan": "发方案", "next_contact_at": local_in(2)},
    "成交": {"contract_number": "HT-WEB-1", "amount": "12000", "signed_on": today(), "invoice_title": "某某有限公司",
           "tax_id": "91310000ma1fl8xq30"},
    "输单": {"lost_reason": "价格太高"},
}  # fmt: skip
MISSING = {"已报价": "item_name", "有意向": "next_contact_at", "成交": "tax_id", "输单": "lost_reason"}


@pytest.mark.parametrize("target", list(FORMS))
def test_web_stage_requirement_refused_when_missing_and_accepted_when_present(rep_client, opp, target):
    url = f"/opportunities/{opp.id}/stage"
    sid = stage(target).id
    bad = {k: v for k, v in FORMS[target].items() if k != MISSING[target]}
    before = (count(StageChange), count(Quote), count(Contract), count(FollowUp))
    resp = rep_client.post(url, data=bad | {"stage": sid, "context": "panel"}, headers=HX)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "还不能进入该阶段" in html and 'class="errors"' in html
    assert (count(StageChange), count(Quote), count(Contract), count(FollowUp)) == before
    assert db.session.get(Opportunity, opp.id).stage.name == "新线索"

    resp = rep_client.post(url, data=FORMS[target] | {"stage": sid, "context": "panel"}, headers=HX)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    assert resp.headers["HX-Retarget"] == "#opp-panel"
    assert "crm:pipeline-changed" in resp.headers["HX-Trigger"]
    assert db.session.get(Opportunity, opp.id).stage.name == target
    assert target in resp.get_data(as_text=True)


def test_picking_a_stage_swaps_in_its_requirement_form(rep_client, opp):
    base = f"/pipeline/stage-form?opportunity_id={opp.id}&context=panel&stage="
    assert 'name="item_name"' in rep_client.get(base + str(stage("已报价").id), headers=HX).get_data(
        as_text=True
    )
    html = rep_client.get(base + str(stage("有意向").id), headers=HX).get_data(as_text=True)
    assert 'name="next_contact_at"' in html and 'name="content"' in html
    html = rep_client.get(base + str(stage("成交").id), headers=HX).get_data(as_text=True)
    assert 'name="contract_number"' in html and 'name="tax_id"' in html and 'name="invoice_title"' in html
    html = rep_client.get(base + str(stage("输单").id), headers=HX).get_data(as_text=True)
    assert "价格太高" in html and 'name="lost_reason"' in html


def test_negative_quote_price_shows_message_and_changes_nothing(rep_client, opp):
    data = FORMS["已报价"] | {"item_price": ["-5", ""], "stage": stage("已报价").id, "context": "panel"}
    resp = rep_client.post(f"/opportunities/{opp.id}/stage", data=data, headers=HX)
    assert resp.status_code == 422 and "不能为负数" in resp.get_data(as_text=True)
    assert count(Quote) == 0


def test_customer_page_shows_opportunity_panel(rep_client, owned, opp):
    html = rep_client.get(f"/customers/{owned.id}").get_data(as_text=True)
    assert 'id="opp-panel"' in html and "年度采购" in html and "推进阶段" in html
    assert "转化为客户" in html  # an owned lead


def test_create_opportunity_from_panel_and_422(rep_client, owned):
    resp = rep_client.post(
        f"/customers/{owned.id}/opportunities", data={"name": "", "amount": "-3"}, headers=HX
    )
    assert resp.status_code == 422 and "请填写商机名称" in resp.get_data(as_text=True)
    resp = rep_client.post(
        f"/customers/{owned.id}/opportunities", data={"name": "二期", "amount": "900"}, headers=HX
    )
    assert resp.status_code == 200 and "二期" in resp.get_data(as_text=True)
    assert count(Opportunity) == 1


def test_edit_opportunity(rep_client, opp):
    assert rep_client.get(f"/opportunities/{opp.id}/edit").status_code == 200
    resp = rep_client.post(f"/opportunities/{opp.id}/edit", data={"name": "改名", "amount": "100"})
    assert resp.status_code == 303
    assert db.session.get(Opportunity, opp.id).name == "改名"


def test_another_rep_cannot_move_or_see_the_form(app, make, opp):
    from tests.conftest import login

    other = make.user(name="小李")
    client = app.test_client()
    login(client, other)
    resp = client.post(
        f"/opportunities/{opp.id}/stage", data={"stage": stage("输单").id, "lost_reason": "价格太高"}
    )
    assert resp.status_code in (403, 404)
    assert client.get(f"/pipeline/stage-form?opportunity_id={opp.id}").status_code in (403, 404)
    assert db.session.get(Opportunity, opp.id).status == "open"


def test_convert_page(rep_client, owned):
    page = rep_client.get(f"/customers/{owned.id}/convert").get_data(as_text=True)
    assert "李经理" in page
    resp = rep_client.post(
        f"/customers/{owned.id}/convert", data={"contact_name": "", "opportunity_name": ""}
    )
    assert resp.status_code == 422 and "请填写商机名称" in resp.get_data(as_text=True)
    assert db.session.get(Customer, owned.id).lifecycle == Lifecycle.LEAD
    resp = rep_client.post(
        f"/customers/{owned.id}/convert", data={"opportunity_name": "首单", "amount": "500"}
    )
    assert resp.status_code == 303
    customer = db.session.get(Customer, owned.id)
    assert customer.lifecycle == Lifecycle.CUSTOMER and customer.contacts[0].is_primary
    assert db.session.scalar(select(Opportunity.name)) == "首单"
    timeline = rep_client.get(f"/customers/{owned.id}/timeline").get_data(as_text=True)
    assert "一转三" in timeline and "新建商机" in timeline


def test_kanban_shows_my_open_opportunities_by_stage(rep_client, opp, make, rep):
    other = make.user(name="别人")
    pool = make.pool(members=[other])
    theirs = make.customer(pool, owner=other)
    services.create_opportunity(db.session, theirs, other, clock.now(), services.OpportunityInput("别人的单"))
    db.session.commit()
    html = rep_client.get("/pipeline").get_data(as_text=True)
    assert "年度采购" in html and "别人的单" not in html
    assert 'data-requirement="quote"' in html and "data-stage-picker" in html


def test_manager_picks_a_rep_of_the_team_but_not_others(manager_client, rep, opp, make):
    assert "年度采购" in manager_client.get(f"/pipeline?user_id={rep.id}").get_data(as_text=True)
    stranger = make.user(name="外组")
    assert manager_client.get(f"/pipeline?user_id={stranger.id}").status_code == 403


def test_kanban_move_without_requirement(rep_client, opp):
    new_stage = Stage(
        name="方案演示", position=4, kind="open", requirement="none", funnel="intent", active=True
    )
    db.session.add(new_stage)
    db.session.commit()
    resp = rep_client.post(f"/opportunities/{opp.id}/stage", data={"stage": new_stage.id, "context": "board"},
                           headers=HX)  # fmt: skip
    assert resp.status_code == 200 and resp.headers["HX-Retarget"] == "#sheet"
    assert db.session.get(Opportunity, opp.id).stage_id == new_stage.id


# ---------------------------------------------------------------- admin settings


def test_admin_edits_stages_with_validation(admin_client):
    page = admin_client.get("/admin/pipeline/stages").get_data(as_text=True)
    assert "已报价" in page and "需要报价单" in page
    quote = stage("已报价")
    resp = admin_client.post(
        f"/admin/pipeline/stages/{quote.id}",
        data={
            "name": "报价中",
            "position": 4,
            "kind": "open",
            "requirement": "quote",
            "funnel": "intent",
            "active": "y",
        },
    )
    assert resp.status_code == 302
    assert db.session.get(Stage, quote.id).name == "报价中"
    # A won stage must require a contract; names are unique.
    won = stage("成交")
    resp = admin_client.post(
        f"/admin/pipeline/stages/{won.id}",
        data={
            "name": "成交",
            "position": 6,
            "kind": "won",
            "requirement": "none",
            "funnel": "deal",
            "active": "y",
        },
    )
    assert resp.status_code == 422 and "必须要求合同" in resp.get_data(as_text=True)
    resp = admin_client.post(
        "/admin/pipeline/stages",
        data={
            "name": "输单",
            "position": 9,
            "kind": "open",
            "requirement": "none",
            "funnel": "lead",
            "active": "y",
        },
    )
    assert resp.status_code == 422 and "已有名为" in resp.get_data(as_text=True)
    assert db.session.get(Stage, won.id).requirement == "contract"


def test_stage_with_open_opportunities_cannot_be_deactivated(admin_client, opp):
    s = stage("新线索")
    resp = admin_client.post(
        f"/admin/pipeline/stages/{s.id}",
        data={"name": "新线索", "position": 1, "kind": "open", "requirement": "none", "funnel": "lead"},
    )
    assert resp.status_code == 422 and "进行中的商机" in resp.get_data(as_text=True)
    assert db.session.get(Stage, s.id).active


def test_admin_edits_lost_reasons(admin_client, api, make, rep, opp):
    resp = admin_client.post("/admin/pipeline/lost-reasons", data={"lost_reasons": "太贵\n\n没预算\n"})
    assert resp.status_code == 302
    assert services.lost_reasons(db.session) == ["太贵", "没预算"]
    bad = admin_client.post("/admin/pipeline/lost-reasons", data={"lost_reasons": "x" * 61})
    assert bad.status_code == 422 and "60" in bad.get_data(as_text=True)
    client = api(make.token(rep))
    resp = client.post(
        f"/api/v1/opportunities/{opp.id}/stage", json={"stage": "输单", "lost_reason": "价格太高"}
    )
    assert resp.status_code == 422
    resp = client.post(
        f"/api/v1/opportunities/{opp.id}/stage", json={"stage": "输单", "lost_reason": "没预算"}
    )
    assert resp.status_code == 200


def test_rep_cannot_open_stage_settings(rep_client):
    assert rep_client.get("/admin/pipeline/stages").status_code == 403


def test_kanban_drop_refused_returns_the_whole_sheet(rep_client, opp):
    """A drop the browser sends without a form (fetch) comes back as the sheet with the form and message."""
    resp = rep_client.post(f"/opportunities/{opp.id}/stage", data={"stage": stage("成交").id, "context": "board"},
                           headers=HX | {"X-Crm-Drop": "1"})  # fmt: skip
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "sheet-card" in html and "合同" in html
    resp = rep_client.post(f"/opportunities/{opp.id}/stage", data={"stage": stage("成交").id, "context": "board"},
                           headers=HX)  # fmt: skip
    assert resp.status_code == 422 and "sheet-card" not in resp.get_data(as_text=True)


def test_quote_quantity_defaults_to_one_as_a_value_and_untouched_rows_are_ignored(rep_client, opp):
    base = f"/pipeline/stage-form?opportunity_id={opp.id}&context=panel&stage={stage('已报价').id}"
    html = rep_client.get(base, headers=HX).get_data(as_text=True)
    assert html.count('name="item_qty" value="1"') == 3 and 'placeholder="1"' not in html
    data = {"item_name": ["CRM 标准版", "", ""], "item_qty": ["1", "1", "1"], "item_price": ["1200", "", ""],
            "valid_until": today(30), "stage": stage("已报价").id, "context": "panel"}  # fmt: skip
    resp = rep_client.post(f"/opportunities/{opp.id}/stage", data=data, headers=HX)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:1000]
    quote = db.session.scalar(select(Quote))
    assert quote is not None and db.session.get(Opportunity, opp.id).stage.name == "已报价"
