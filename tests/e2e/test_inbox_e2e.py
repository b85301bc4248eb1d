"""The workbench in real Chromium: a rep on a 390×844 phone follows up from the inbox (two taps and some
typing) and the sections update in place; snooze and done; the other screens of follow-ups and reminders
on phone and desktop, each screenshotted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.followups.services import record_followup
from crm.models import FollowUp, Reminder, SpotCheck
from crm.reminders.dispatch import fan_out
from tests.e2e.conftest import assert_no_horizontal_scroll

SH = clock.zone("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 10, 0, tzinfo=SH).astimezone(UTC)


@pytest.fixture
def frozen():
    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def desk(make, rep, manager, frozen):
    """A rep with today's work: two contacts due today, one overdue, a hot stalled customer, a recycle warning."""
    pool = make.pool(members=[rep], admins=[manager])
    names = [
        "杭州星河科技有限公司",
        "苏州博远电子有限公司",
        "广州睿思信息技术有限公司",
        "深圳蓝海物流有限公司",
        "上海云启软件有限公司",
    ]
    customers = [
        make.customer(
            pool,
            owner=rep,
            name=n,
            grade=g,
            claimed_at=NOW - timedelta(days=20),
            contact_name="王总",
            phone=f"1380013800{i}",
            wechat=f"wx_{i}",
        )  # fmt: skip
        for i, (n, g) in enumerate(zip(names, "ABACB", strict=True))
    ]
    make.reminder(rep, customer=customers[0], kind="next_contact", title="联系 杭州星河科技有限公司: 发报价单",
                  due_at=NOW + timedelta(hours=4))  # fmt: skip
    make.reminder(
        rep, customer=customers[1], kind="custom", title="确认合同盖章进度", due_at=NOW + timedelta(hours=6)
    )
    make.reminder(rep, customer=customers[2], kind="cadence", title="定期回访: 广州睿思信息技术有限公司",
                  due_at=NOW - timedelta(days=2), escalated_at=NOW - timedelta(hours=20))  # fmt: skip
    make.reminder(rep, customer=customers[3], kind="stalled", title="高意向未推进: 深圳蓝海物流有限公司",
                  due_at=NOW - timedelta(days=1))  # fmt: skip
    make.reminder(rep, customer=customers[4], kind="recycle_warning",
                  title="回收预警: 上海云启软件有限公司 7 天未跟进,3 天后回收", due_at=NOW)  # fmt: skip
    fan_out(db.session, NOW)
    db.session.commit()
    return customers


def _count(page, key: str) -> str:
    return page.locator(f'#inbox [data-count="{key}"] .value').inner_text()


def test_rep_follows_up_from_the_inbox_on_a_phone_and_it_updates_in_place(
    live_server, page, rep, desk, login_as, screenshot
):
    login_as(page, rep)
    assert _count(page, "today") == "2" and _count(page, "overdue") == "1"
    assert _count(page, "stalled") == "1" and _count(page, "recycle") == "1"
    assert (
        page.locator("#notify-badge .dot").inner_text() == "3"
    )  # due so far; later ones notify at their time
    assert_no_horizontal_scroll(page)
    screenshot(page, "inbox-phone")
    # Tap 1: 跟进 on the overdue customer opens the form over the inbox.
    item = page.locator("#sec-overdue .inbox-item").first
    item.get_by_role("link", name="跟进").click()
    sheet = page.locator("#sheet .followup-form")
    sheet.wait_for()
    assert page.locator("#sheet .fu-title").inner_text().strip().endswith("广州睿思信息技术有限公司")
    assert page.locator("#sheet input[name=channel][value=phone]").is_checked()
    page.locator("#sheet label", has_text="微信").click()
    page.fill("#sheet textarea[name=content]", "微信发了案例,客户说下周内部讨论")
    page.fill("#sheet input[name=next_plan]", "下周三电话确认讨论结果")
    page.locator("#sheet .chip", has_text="下周一").click()
    assert_no_horizontal_scroll(page)
    screenshot(page, "followup-sheet-phone")
    # Tap 2: save. The sheet closes and the counts change without leaving the page.
    url_before = page.url
    page.locator("#sheet button[type=submit]").click()
    page.wait_for_selector("#sheet .followup-form", state="detached")
    page.wait_for_function("document.querySelector('#inbox [data-count=overdue] .value').innerText === '0'")
    assert page.url == url_before
    assert page.locator(".toast", has_text="已保存跟进").is_visible()
    screenshot(page, "inbox-after-followup-phone")
    fu = db.session.scalar(select(FollowUp))
    assert fu.channel == "wechat" and fu.next_plan == "下周三电话确认讨论结果"
    # The next contact (next Monday, picked on the phone) is not today: today still has its 2.
    assert _count(page, "today") == "2"


def test_a_followup_saved_elsewhere_shows_when_the_tab_comes_back(live_server, page, rep, desk, login_as):
    login_as(page, rep)
    assert _count(page, "today") == "2"
    record_followup(db.session, desk[0], rep, channel="phone", content="电话确认", goal_met=True, next_plan="签合同",
                    next_contact_at=NOW + timedelta(days=2), now=NOW)  # fmt: skip
    db.session.commit()
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_function("document.querySelector('#inbox [data-count=today] .value').innerText === '1'")


def test_snooze_and_done_on_a_phone(live_server, page, rep, desk, login_as, screenshot):
    login_as(page, rep)
    today = page.locator("#sec-today .inbox-item")
    assert today.count() == 2
    today.first.locator("summary", has_text="稍后").click()
    screenshot(page, "snooze-menu-phone")
    today.first.get_by_role("button", name="明天").click()
    page.wait_for_function("document.querySelector('#inbox [data-count=today] .value').innerText === '1'")
    page.locator("#sec-today .inbox-item").first.get_by_role("button", name="完成").click()
    page.wait_for_function("document.querySelector('#inbox [data-count=today] .value').innerText === '0'")
    assert page.locator("#sec-today .empty").is_visible()
    snoozed = db.session.scalar(select(Reminder).where(Reminder.kind == "next_contact"))
    assert snoozed.due_at == datetime(2026, 3, 11, 10, 0, tzinfo=SH).astimezone(UTC)


def test_follow_up_page_and_bad_input_on_a_phone(live_server, page, rep, desk, login_as, screenshot):
    login_as(page, rep)
    page.goto(f"{live_server}/customers/{desk[0].id}/followup")
    assert page.locator("a[href^='tel:']").first.is_visible()
    assert page.get_by_role("button", name="复制微信").is_visible()
    page.fill("input[name=next_contact_at]", "2026-03-01T10:00")
    page.get_by_role("button", name="保存跟进").click()
    page.wait_for_selector("text=请填写跟进内容")
    assert page.get_by_text("时间必须晚于现在").is_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, "followup-page-errors-phone")
    page.fill("textarea[name=content]", "上门拜访,见到采购经理")
    page.fill("input[name=next_plan]", "准备正式报价单")
    page.fill("input[name=next_contact_at]", "2026-03-12T15:00")
    page.get_by_role("button", name="保存跟进").click()
    page.wait_for_url(f"{live_server}/")
    assert page.get_by_text("已保存跟进").first.is_visible()


def test_other_screens_on_phone_and_desktop(
    live_server, page, new_page, rep, manager, admin, desk, login_as, screenshot
):
    login_as(page, rep)
    for path, name in [("/notifications", "notifications"), ("/reminders/new", "custom-reminder"),
                       ("/inbox/section/today", "section-today"), ("/profile", "profile-notify"),
                       ("/reminders", "my-reminders")]:  # fmt: skip
        page.goto(live_server + path)
        screenshot(page, f"{name}-phone")
        wide = page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1).map(e => e.tagName + '.' + e.className + ':' + "
            "Math.round(e.getBoundingClientRect().left) + '-' + Math.round(e.getBoundingClientRect().right) + '/' + "
            "document.documentElement.clientWidth).slice(0, 5)"
        )
        assert not wide, (path, wide)
        assert_no_horizontal_scroll(page)
    # A custom reminder with a bad time, then a good one.
    page.goto(live_server + "/reminders/new")
    page.fill("input[name=title]", "下周三提醒我发报价")
    page.fill("input[name=due_at]", "2026-03-01T10:00")
    page.get_by_role("button", name="保存提醒").click()
    page.wait_for_selector("text=时间必须晚于现在")
    page.fill("input[name=due_at]", "2026-03-18T10:00")
    page.get_by_role("button", name="保存提醒").click()
    page.wait_for_url(f"{live_server}/")
    assert page.get_by_text("已设置提醒").first.is_visible()

    fu = record_followup(db.session, desk[0], rep, channel="visit", content="拜访客户,演示了公海功能",
                         goal_met=True, next_plan="发报价", next_contact_at=NOW + timedelta(days=3),
                         now=NOW - timedelta(hours=20))  # fmt: skip
    db.session.add(SpotCheck(followup_id=fu.id, manager_id=manager.id, sampled_on=(NOW - timedelta(days=1)).date(),
                             verdict="pending"))  # fmt: skip
    db.session.commit()
    boss = new_page(desktop=True)
    login_as(boss, manager)
    assert boss.get_by_text("团队逾期未跟进").is_visible()
    screenshot(boss, "inbox-manager-desktop")
    boss.goto(live_server + "/spot-checks")
    screenshot(boss, "spot-checks-desktop")
    boss.get_by_role("button", name="虚假").click()
    boss.wait_for_selector(".spot-item .badge-danger")
    boss.goto(live_server + "/inbox/team")
    screenshot(boss, "team-overdue-desktop")

    boss_phone = new_page()
    login_as(boss_phone, manager)
    boss_phone.goto(live_server + "/spot-checks")
    assert_no_horizontal_scroll(boss_phone)
    screenshot(boss_phone, "spot-checks-phone")

    admin_page = new_page(desktop=True)
    login_as(admin_page, admin)
    for path, name in [("/admin/reminders", "admin-reminders"), ("/admin/channels", "admin-channels"),
                       ("/admin/deliveries", "admin-deliveries")]:  # fmt: skip
        admin_page.goto(live_server + path)
        screenshot(admin_page, f"{name}-desktop")
    admin_page.goto(live_server + "/admin/channels")
    admin_page.fill("#wh-name", "销售一组群")
    admin_page.fill("#wh-url", "http://oapi.dingtalk.com/robot/send?access_token=abc")
    admin_page.locator("#webhooks_panel form").last.get_by_role("button", name="添加").click()
    admin_page.wait_for_selector("text=必须以 https:// 开头")
    admin_page.fill("#smtp-host", "127.0.0.1")
    admin_page.fill("#smtp-port", "1")
    admin_page.fill("#smtp-from_addr", "crm@example.com")
    admin_page.get_by_role("button", name="发送测试邮件").click()
    admin_page.wait_for_selector("#smtp-result")
    assert "测试发送失败" in admin_page.locator("#smtp-result").inner_text()
    screenshot(admin_page, "admin-channels-errors-desktop")
    admin_phone = new_page()
    login_as(admin_phone, admin)
    for path in ("/admin/channels", "/admin/reminders", "/admin/deliveries"):
        admin_phone.goto(live_server + path)
        assert_no_horizontal_scroll(admin_phone)
    screenshot(admin_phone, "admin-channels-phone")


def test_inbox_on_desktop(live_server, desktop_page, rep, desk, login_as, screenshot):
    login_as(desktop_page, rep)
    assert desktop_page.locator("nav.sidebar").is_visible()
    desktop_page.locator("#sec-today .inbox-item").first.get_by_role("link", name="跟进").click()
    desktop_page.locator("#sheet .followup-form").wait_for()
    screenshot(desktop_page, "followup-sheet-desktop")
    desktop_page.keyboard.press("Escape")
    desktop_page.wait_for_selector("#sheet .followup-form", state="detached")
    screenshot(desktop_page, "inbox-desktop")
