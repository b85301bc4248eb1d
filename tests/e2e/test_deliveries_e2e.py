"""The delivery problems page on a phone: filter by channel with htmx, page through, retry one."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from crm import clock
from crm.extensions import db
from crm.models import EndpointBackoff, ReminderDelivery, Role, WebhookEndpoint
from tests.e2e.conftest import SHOTS, assert_no_horizontal_scroll


def test_problems_page_filters_pages_and_retries_on_a_phone(live_server, page, login_as, screenshot, make):
    admin = make.user(Role.ADMIN, name="管理员")
    rep = make.user(Role.REP, name="小王")
    now = clock.now()
    hook = WebhookEndpoint(kind="dingtalk", name="销售群", url="https://oapi.dingtalk.com/robot/send?access_token=t",
                           enabled=True, extra={}, created_at=now)  # fmt: skip
    db.session.add(hook)
    db.session.flush()
    db.session.add(EndpointBackoff(key=f"endpoint:{hook.id}", failures=2, retry_at=now + timedelta(minutes=4),
                                   last_error="连接 oapi.dingtalk.com 超时。", updated_at=now))  # fmt: skip
    for i in range(55):
        channel, endpoint = ("dingtalk", f"endpoint:{hook.id}") if i % 3 else ("email", "smtp")
        reminder = make.reminder(
            rep, title=f"跟进杭州星河科技 {i}", due_at=now - timedelta(hours=1), commit=False
        )
        db.session.add(ReminderDelivery(
            reminder_id=reminder.id, user_id=rep.id, channel=channel, round=0,
            status="gave_up" if i % 2 else "failed", attempts=6 if i % 2 else 2, endpoint=endpoint,
            next_attempt_at=now + timedelta(minutes=30), last_error="钉钉返回 HTTP 500", created_at=now))  # fmt: skip
    db.session.commit()
    login_as(page, admin)
    page.goto(f"{live_server}/admin/deliveries")
    expect(page.get_by_text("共 55 条")).to_be_visible()
    expect(page.get_by_text("第 1 / 2 页")).to_be_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, "deliveries-phone")
    page.screenshot(path=str(SHOTS / "deliveries-phone-top.png"))
    page.select_option("select[name=channel]", "email")
    expect(page.get_by_text("共 19 条")).to_be_visible()
    page.locator("#deliveries_panel button", has_text="重试").nth(1).click()
    expect(page.get_by_text("共 18 条")).to_be_visible()
    page.screenshot(path=str(SHOTS / "deliveries-phone-filtered.png"))
