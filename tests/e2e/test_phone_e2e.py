"""Phone experience, second pass (issue 20), in Chromium at 390×844: a manager approves an extension from
its notification in two taps; the customer page's sticky action bar; each screen screenshotted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import ExtensionRequest, RuleKind
from crm.recycle import services as recycle
from crm.reminders.dispatch import fan_out
from tests.e2e.conftest import SHOTS, assert_no_horizontal_scroll
from tests.recycle_support import add_rule

SH = clock.zone("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 10, 0, tzinfo=SH).astimezone(UTC)


@pytest.fixture
def frozen():
    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def team(make, rep, manager, frozen):
    """The rep's customers under a 7-day rule; one 延期申请 waiting on the manager, its notice delivered."""
    pool = make.pool("新线索池", members=[rep], admins=[manager])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2)
    customers = [
        make.customer(
            pool,
            owner=rep,
            name=n,
            claimed_at=NOW - timedelta(days=d),
            contact_name="王总",
            phone=f"1380013800{i}",
            wechat=f"wx_{i}",
        )  # fmt: skip
        for i, (n, d) in enumerate(
            (("杭州星河科技有限公司", 6), ("苏州博远电子有限公司", 2), ("上海云启软件有限公司", 6))
        )
    ]
    req = recycle.request_extension(db.session, customers[0].id, rep, 5, "客户在外地出差,下周回来", NOW)
    db.session.commit()
    fan_out(db.session, NOW + timedelta(minutes=1))
    db.session.commit()
    return {"pool": pool, "customers": customers, "request": req}


def test_manager_approves_an_extension_from_its_notification_in_two_taps(
    page, live_server, login_as, manager, team, screenshot
):
    login_as(page, manager)
    bar = page.locator(".bottombar")
    assert bar.get_by_text("审批").is_visible() and bar.get_by_text("看板").is_visible()
    assert bar.locator(".nav-badge").inner_text() == "1"
    screenshot(page, "phone2-manager-home")
    page.goto(f"{live_server}/notifications")
    screenshot(page, "phone2-manager-notifications")
    page.locator(".notification a").first.click()  # tap 1: the notice
    page.wait_for_url("**/recycle/extension-requests/*")
    assert_no_horizontal_scroll(page)
    screenshot(page, "phone2-extension-request")
    approve = page.get_by_role("button", name="批准延期 5 天")
    box = approve.bounding_box()
    assert box["y"] + box["height"] <= 844 - 60, "批准 must be visible without scrolling"
    approve.click()  # tap 2: approved
    page.locator("#extension_request .badge-ok").wait_for()
    assert db.session.scalar(select(ExtensionRequest.status)) == "approved"
    page.goto(f"{live_server}/approvals/")
    screenshot(page, "phone2-approvals")


def test_follow_up_from_the_customer_page_in_three_taps_without_scrolling(
    page, live_server, login_as, rep, team, screenshot
):
    customer = team["customers"][2]  # due in a day, no request yet
    login_as(page, rep)
    page.goto(f"{live_server}/customers/{customer.id}")
    assert_no_horizontal_scroll(page)
    bar = page.locator(".cp-bar")
    for label in ("写跟进", "拨打", "微信", "提醒", "申请延期"):
        assert bar.get_by_text(label).is_visible(), label
    score = page.locator("#panel-score details")
    assert score.get_attribute("open") is None and not page.locator(".score-lines").is_visible()
    screenshot(page, "phone2-customer")
    page.screenshot(path=str(SHOTS / "phone2-customer-viewport.png"))
    bar.get_by_text("写跟进").click()  # tap 1: the sheet opens with the cursor in 沟通内容
    content = page.locator("#followup-sheet textarea[name=content]")
    content.wait_for()
    page.wait_for_function("document.activeElement && document.activeElement.name === 'content'")
    page.keyboard.type("电话沟通,客户下周看方案")
    page.locator("#followup-sheet input[name=next_plan]").click()  # tap 2
    page.keyboard.type("发报价单")
    page.locator("#followup-sheet button[type=submit]").first.click()  # tap 3
    page.locator("#sheet .sheet-card").wait_for(state="detached")
    page.locator("#timeline").get_by_text("电话沟通,客户下周看方案").wait_for()
    assert page.evaluate("window.scrollY") == 0
    bar.get_by_text("申请延期").click()
    page.locator("#extension-action[open]").wait_for()
    screenshot(page, "phone2-customer-extension")


def test_done_on_the_workbench_can_be_undone_from_its_toast(page, live_server, login_as, rep, team, make):
    from crm.models import Reminder

    customer = team["customers"][1]
    r = make.reminder(
        rep, customer=customer, kind="custom", title="确认合同盖章", due_at=NOW + timedelta(hours=2)
    )
    login_as(page, rep)
    item = page.locator(f"#r-{r.id}")
    item.get_by_role("button", name="完成").click()
    undo = page.locator("#toasts .toast-undo")
    undo.wait_for()
    item.wait_for(state="detached")
    undo.click()
    page.locator(f"#r-{r.id}").wait_for()
    db.session.expire_all()
    assert db.session.get(Reminder, r.id).status == "open"
    # A planned contact's 完成 first asks whether to log a follow-up.
    planned = make.reminder(
        rep,
        customer=team["customers"][2],
        kind="next_contact",
        title="联系: 报价",
        due_at=NOW + timedelta(hours=3),
    )
    page.reload()
    row = page.locator(f"#r-{planned.id}")
    row.locator("summary", has_text="完成").click()
    assert row.get_by_text("写跟进再完成").is_visible() and row.get_by_text("不记录,直接完成").is_visible()
    page.screenshot(path=str(SHOTS / "phone2-done-ask.png"))


def test_manager_merges_a_conflict_in_a_sheet(
    page, live_server, login_as, rep, manager, team, make, screenshot
):
    from crm.models import Customer, DuplicateConflict, Role

    other = make.user(Role.REP, name="小李")
    other.team = rep.team
    db.session.commit()
    a = make.customer(team["pool"], owner=rep, name="南京明德教育科技有限公司", phone="13900001111")
    b = make.customer(team["pool"], owner=other, name="南京明德教育科技发展有限公司", phone="13900002222")
    db.session.add(DuplicateConflict(customer_id=b.id, candidate_id=a.id, similarity=96.0, status="open",
                                     reason="名称相似", created_at=NOW))  # fmt: skip
    db.session.commit()
    login_as(page, manager)
    page.goto(f"{live_server}/intake/conflicts")
    page.get_by_role("link", name="合并…").click()
    sheet = page.locator("#merge-sheet")
    sheet.wait_for()
    assert sheet.get_by_text("小王").is_visible() and sheet.get_by_text("小李").is_visible()
    page.screenshot(path=str(SHOTS / "phone2-merge-sheet.png"))
    sheet.get_by_role("button", name="保留已有,合并新线索").click()
    sheet.wait_for(state="detached")
    page.get_by_text("没有待处理的查重冲突").wait_for()
    db.session.expire_all()
    assert db.session.get(Customer, b.id).merged_into_id == a.id
    screenshot(page, "phone2-conflicts-after-merge")


def test_admin_picks_holidays_on_a_month_calendar(page, live_server, login_as, admin, frozen):
    from crm.models import Holiday

    login_as(page, admin)
    page.goto(f"{live_server}/admin/")
    assert page.get_by_role("link", name="节假日").is_visible()  # the 管理 menu, one row per screen
    page.screenshot(path=str(SHOTS / "phone2-admin-menu.png"))
    page.goto(f"{live_server}/recycle/holidays?year=2027")
    assert not page.locator(".admin-tabs").is_visible() and page.locator(".admin-back").is_visible()
    page.fill("[data-holiday-name]", "公司年会")
    page.locator('[data-hday="2027-11-11"]').click()  # 放假
    page.locator('[data-hday="2027-11-13"]').click()
    page.locator('[data-hday="2027-11-13"]').click()  # a second tap: 调休上班
    page.screenshot(path=str(SHOTS / "phone2-holidays.png"))
    page.get_by_role("button", name="保存").click()
    page.wait_for_load_state("networkidle")
    db.session.expire_all()
    saved = {
        h.day.isoformat(): (h.is_workday, h.name)
        for h in db.session.query(Holiday).all()
        if h.day.year == 2027
    }
    assert saved["2027-11-11"] == (False, "公司年会") and saved["2027-11-13"] == (True, "公司年会")
    assert saved["2027-01-01"] == (False, "元旦")  # the rest of the year is kept


def test_board_shows_claim_disabled_with_the_reason_at_the_daily_limit(
    page, live_server, login_as, rep, make, frozen
):
    pool = make.pool("限额池", members=[rep], daily_claim_limit=1)
    first, second = make.customer(pool, name="第一家有限公司"), make.customer(pool, name="第二家有限公司")
    login_as(page, rep)
    page.goto(f"{live_server}/pools/{pool.id}")
    page.locator(f"#c-{first.id}").get_by_role("button", name="领取").click()
    page.locator(f"#c-{first.id}.is-claimed").wait_for()
    page.reload()
    button = page.locator(f"#c-{second.id}").get_by_role("button", name="领取")
    assert button.is_disabled() and page.locator(f"#why-{second.id}").inner_text() == "今日已领 1/1"
    page.screenshot(path=str(SHOTS / "phone2-board-limit.png"))


def test_a_list_row_opens_its_customer_when_tapped_anywhere(
    page, live_server, login_as, rep, team, make, screenshot
):
    """The whole row is the tap target (its meta line too), while the call link keeps its own tap."""
    customer = team["customers"][1]
    r = make.reminder(
        rep, customer=customer, kind="custom", title="确认合同盖章", due_at=NOW + timedelta(hours=2)
    )
    login_as(page, rep)
    page.goto(f"{live_server}/customers")
    row = page.locator(".cust-row").first
    phone = row.locator('a[href^="tel:"]')
    box = phone.bounding_box()
    on_top = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('a').getAttribute('href')",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert on_top.startswith("tel:")
    screenshot(page, "phone2-customer-list")
    row.locator(".small.muted").click(force=True)  # a tap on the meta line lands on the row's link
    page.wait_for_url(lambda url: "/customers/" in url and url.rstrip("/").split("/")[-1].isdigit())
    page.goto(f"{live_server}/")
    item = page.locator(f"#r-{r.id} .meta")
    item.wait_for()
    item.click(force=True)
    page.wait_for_url(f"**/customers/{customer.id}")
