"""Recycle screens through the test client: rule settings with preview and confirmation, the customer panel,
the managers' extension requests, holidays and the run log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import ExtensionRequest, Holiday, RecycleRule, RuleKind
from crm.recycle.sweep import sweep
from tests.recycle_support import add_rule, fresh, sh

T0 = sh(2026, 3, 2, 9, 0)
DAY = timedelta(days=1)
HX = {"HX-Request": "true"}


def _rule_form(**overrides) -> dict:
    data = {"rules-0-kind": "no_followup", "rules-0-days": "7", "rules-0-day_kind": "calendar",
            "rules-0-warn_days": "2", "rules-0-escalate_days": "1", "rules-0-target_pool_id": "",
            "rules-0-exclude_stage_id": "", "rules-0-exclude_protected": "y", "rules-0-enabled": "y"}  # fmt: skip
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def setting(make, manager, rep):
    pool = make.pool("新线索池", members=[rep], admins=[manager])
    with clock.frozen(T0):
        for days_ago in (10, 10, 6, 1):
            make.customer(pool, owner=rep, claimed_at=T0 - days_ago * DAY)
    return pool


def test_rules_page_shows_the_form_preview_and_audit(manager_client, setting):
    add_rule(setting, RuleKind.NO_FOLLOWUP, days=14)
    with clock.frozen(T0):
        page = manager_client.get(f"/recycle/pools/{setting.id}/rules").get_data(as_text=True)
    assert "规则预演" in page and "提前几天预警负责人" in page and "修改记录" in page
    assert 'value="14"' in page


def test_preview_updates_from_the_form_without_saving(manager_client, setting):
    with clock.frozen(T0):
        resp = manager_client.post(
            f"/recycle/pools/{setting.id}/rules/preview", data=_rule_form(), headers=HX
        )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and html.lstrip().startswith('<section class="card" id="rule_preview"')
    assert 'data-testid="recycle-now">2<' in html and 'data-testid="warned-now">1<' in html
    assert db.session.scalar(select(RecycleRule.id)) is None


def test_saving_asks_to_confirm_the_count_then_saves(manager_client, setting):
    url = f"/recycle/pools/{setting.id}/rules"
    with clock.frozen(T0):
        first = manager_client.post(url, data={**_rule_form(), "action": "save"}, headers=HX)
        assert first.status_code == 422 and "保存后将立即回收 2 个客户" in first.get_data(as_text=True)
        assert db.session.scalar(select(RecycleRule.id)) is None
        done = manager_client.post(url, data={**_rule_form(), "action": "save", "confirm": "2"}, headers=HX)
    assert done.status_code == 200 and done.headers["HX-Redirect"].endswith("saved=1")
    assert [r.days for r in db.session.scalars(select(RecycleRule))] == [7]


def test_nonsense_values_re_render_the_form_with_errors_and_save_nothing(manager_client, setting):
    url = f"/recycle/pools/{setting.id}/rules"
    resp = manager_client.post(
        url,
        data={**_rule_form(**{"rules-0-days": "-1", "rules-0-escalate_days": "5"}), "action": "save"},
        headers=HX,
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "天数需在 1–3650 之间" in html and "预警天数需大于上报天数" in html
    assert db.session.scalar(select(RecycleRule.id)) is None


def test_add_rule_appends_a_blank_rule_card(manager_client, setting):
    resp = manager_client.post(
        f"/recycle/pools/{setting.id}/rules", data={**_rule_form(), "action": "add"}, headers=HX
    )
    assert resp.status_code == 200 and "规则 2" in resp.get_data(as_text=True)


def test_rep_cannot_open_rule_settings(rep_client, setting):
    assert rep_client.get(f"/recycle/pools/{setting.id}/rules").status_code == 403


def test_customer_panel_extension_request_then_manager_approves(
    app, rep_client, manager_client, setting, rep
):
    add_rule(setting, RuleKind.NO_FOLLOWUP, days=30, warn_days=2)
    customer_id = fresh_customer_id(setting)
    with clock.frozen(T0):
        panel = rep_client.get(f"/recycle/customers/{customer_id}").get_data(as_text=True)
        assert "30 天未跟进 →" in panel and "申请延期" in panel
        bad = rep_client.post(
            f"/recycle/customers/{customer_id}/extension", data={"days": "3", "reason": ""}, headers=HX
        )
        assert bad.status_code == 422 and "请填写延期理由" in bad.get_data(as_text=True)
        ok = rep_client.post(f"/recycle/customers/{customer_id}/extension",
                             data={"days": "3", "reason": "客户在外地"}, headers=HX)  # fmt: skip
        assert ok.status_code == 200 and "待审批" in ok.get_data(as_text=True)
        listing = manager_client.get("/recycle/extension-requests").get_data(as_text=True)
        assert "客户在外地" in listing
        request_id = db.session.scalar(select(ExtensionRequest.id))
        decided = manager_client.post(f"/recycle/extension-requests/{request_id}/approve", headers=HX)
    assert decided.status_code == 200 and "没有待审批的延期申请" in decided.get_data(as_text=True)
    assert db.session.get(ExtensionRequest, request_id).status == "approved"


def fresh_customer_id(pool) -> int:
    from crm.models import Customer

    return db.session.scalar(select(Customer.id).where(Customer.pool_id == pool.id).order_by(Customer.id))


def test_holiday_page_refuses_a_bad_date_and_saves_a_good_year(admin_client):
    bad = admin_client.post(
        "/recycle/holidays?year=2027", data={"text": "2027-01-01,休,元旦\n2027-02-31,休,坏"}, headers=HX
    )
    assert bad.status_code == 422 and "第 2 行日期无效" in bad.get_data(as_text=True)
    assert db.session.get(Holiday, 1) is not None
    before_2026 = db.session.query(Holiday).filter(Holiday.day < sh(2027, 1, 1).date()).count()
    good = admin_client.post(
        "/recycle/holidays?year=2027", data={"text": "2027-01-01,休,元旦\n2027-02-06,班,调休"}
    )
    assert good.status_code == 303
    assert db.session.query(Holiday).filter(Holiday.day >= sh(2027, 1, 1).date()).count() == 2
    assert db.session.query(Holiday).filter(Holiday.day < sh(2027, 1, 1).date()).count() == before_2026


def test_run_log_lists_sweeps(admin_client, setting):
    add_rule(setting, RuleKind.NO_FOLLOWUP, days=7)
    sweep(db.session, T0)
    page = admin_client.get("/recycle/runs").get_data(as_text=True)
    assert "回收日志" in page and "完成" in page and "7 天未跟进: 2" in page


def test_panel_and_json_hook_are_registered(app):
    from crm import hooks

    assert "recycle" in [p.name for p in hooks.CUSTOMER_PANELS]
    assert "extension_requests" in [p.name for p in hooks.HOME_PANELS]
    from crm.recycle.routes import customer_json

    assert customer_json in hooks.CUSTOMER_JSON


def test_nurture_from_the_panel(rep_client, setting, rep):
    add_rule(setting, RuleKind.NURTURE_EXPIRY)
    customer_id = fresh_customer_id(setting)
    with clock.frozen(T0):
        resp = rep_client.post(
            f"/recycle/customers/{customer_id}/nurture", data={"until": "2026-04-01"}, headers=HX
        )
    assert resp.status_code == 200 and "长期培育到期 → 2026-04-01 00:00 回收" in resp.get_data(as_text=True)
    from crm.models import Customer

    assert fresh(db.session.get(Customer, customer_id)).nurture_until == sh(2026, 4, 1)
