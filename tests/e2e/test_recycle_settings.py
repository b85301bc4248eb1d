"""The rule settings page in real Chromium: change a rule, watch the preview counts, save with confirmation;
the customer's recycle panel on a phone."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import RecycleRule, Role, RuleKind
from tests.e2e.conftest import SHOTS, assert_no_horizontal_scroll
from tests.recycle_support import add_rule


def _setup(make):
    manager = make.user(Role.MANAGER, name="王主管")
    rep = make.user(Role.REP, name="刘洋", manager=manager)
    pool = make.pool("新线索池", members=[rep], admins=[manager])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=14, warn_days=3, escalate_days=1)
    now = clock.now()
    customers = [make.customer(pool, owner=rep, claimed_at=now - timedelta(days=10), name=f"杭州星河科技{i}有限公司")
                 for i in range(3)]  # fmt: skip
    customers += [
        make.customer(pool, owner=rep, claimed_at=now - timedelta(days=2), name="苏州云启贸易有限公司")
    ]
    return manager, rep, pool, customers


def test_change_rule_see_preview_and_save_on_a_phone(live_server, page, login_as, screenshot, make):
    manager, _rep, pool, _customers = _setup(make)
    login_as(page, manager)
    page.goto(f"{live_server}/recycle/pools/{pool.id}/rules")
    expect(page.get_by_test_id("recycle-now")).to_have_text("0")
    expect(page.get_by_test_id("warned-now")).to_have_text("0")
    summary = page.locator(".rule-summary").first  # saved rules are one-line summaries until tapped
    assert "未跟进" in summary.inner_text() and "14 天" in summary.inner_text()
    assert not page.locator("input[name='rules-0-days']").is_visible()
    summary.click()
    page.fill("input[name='rules-0-days']", "7")
    page.locator("input[name='rules-0-days']").dispatch_event("change")
    expect(page.get_by_test_id("recycle-now")).to_have_text("3")
    assert_no_horizontal_scroll(page)
    screenshot(page, "recycle_rules_preview_phone")
    page.get_by_role("button", name="保存规则").click()
    expect(page.get_by_text("保存后将立即回收 3 个客户。")).to_be_visible()
    screenshot(page, "recycle_rules_confirm_phone")
    page.get_by_role("button", name="确认回收 3 个并保存").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "recycle_rules_confirm_phone_view.png"))
    assert db.session.scalar(select(RecycleRule.days)) == 14  # nothing saved yet
    page.get_by_role("button", name="确认回收 3 个并保存").click()
    expect(page.get_by_text("回收规则已保存。")).to_be_visible()
    db.session.expire_all()
    assert db.session.scalar(select(RecycleRule.days)) == 7
    expect(page.get_by_text("修改了「新线索池」的回收规则")).to_be_visible()


def test_rules_page_on_a_laptop(live_server, desktop_page, login_as, screenshot, make):
    manager, _rep, pool, _customers = _setup(make)
    login_as(desktop_page, manager)
    desktop_page.goto(f"{live_server}/recycle/pools/{pool.id}/rules")
    desktop_page.get_by_role("button", name="添加规则").click()
    expect(desktop_page.get_by_text("规则 2")).to_be_visible()
    desktop_page.select_option("select[name='rules-1-kind']", "no_first_contact")
    # An hour-based rule shows 小时, not 天数.
    expect(desktop_page.locator("input[name='rules-1-days']")).to_be_hidden()
    desktop_page.fill("input[name='rules-1-hours']", "48")
    desktop_page.fill("input[name='rules-1-warn_days']", "1")
    desktop_page.fill("input[name='rules-1-escalate_days']", "0")
    desktop_page.locator("input[name='rules-1-hours']").dispatch_event("change")
    expect(desktop_page.get_by_test_id("recycle-now")).to_have_text("4")
    assert_no_horizontal_scroll(desktop_page)
    screenshot(desktop_page, "recycle_rules_desktop")


def test_customer_recycle_panel_on_a_phone(live_server, page, login_as, screenshot, make):
    _manager, rep, _pool, customers = _setup(make)
    login_as(page, rep)
    page.goto(f"{live_server}/recycle/customers/{customers[0].id}")
    expect(page.get_by_test_id("due-summary")).to_contain_text("14 天未跟进 →")
    page.get_by_text("申请延期").click()
    page.fill("input[name='days']", "3")
    page.fill("textarea[name='reason']", "客户下周出差回来再谈")
    page.get_by_role("button", name="提交申请").click()
    expect(page.get_by_text("待审批")).to_be_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, "recycle_customer_panel_phone")
