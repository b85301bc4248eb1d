"""The Content-Security-Policy in real Chromium at 390×844 (issue 18 #12): the main screens load with no
CSP violation, and htmx and the handlers moved from inline attributes into app.js still work (a claim, a
follow-up from the workbench, the assign form's 取消, the delete confirmation, the polling)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, FollowUp, Pool
from crm.reminders.dispatch import fan_out
from tests.e2e.conftest import PHONE, _page

CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + e.sourceFile + ':' + e.lineNumber);
});
"""


@pytest.fixture
def strict(browser):
    """``strict()``: a 390×844 phone page with the Content-Security-Policy enforced (not bypassed)."""
    contexts = []

    def make():
        context, page = _page(browser, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2,
                              bypass_csp=False)  # fmt: skip
        contexts.append(context)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def watch():
    """``watch(page)`` records CSP violations (console and the DOM event); ``check(page)`` asserts none."""
    seen: list[str] = []

    def attach(page):
        page.add_init_script(CSP_WATCH)
        page.on(
            "console",
            lambda msg: (
                seen.append(msg.text)
                if msg.type in ("error", "warning") and "Content Security Policy" in msg.text
                else None
            ),
        )
        return page

    def check(page, where: str):
        page.wait_for_load_state("load")
        events = page.evaluate("window.__cspViolations || []")
        assert seen == [] and events == [], (where, seen, events)

    attach.check = check
    return attach


@pytest.fixture
def scene(make, rep, manager):
    pool = make.pool(members=[rep], admins=[manager], name="新线索池", daily_claim_limit=5)
    now = clock.now()
    owned = make.customer(pool, owner=rep, name="杭州星河科技有限公司", claimed_at=now - timedelta(days=3),
                          contact_name="王总", phone="13800138000")  # fmt: skip
    make.reminder(rep, customer=owned, kind="next_contact", title="联系 杭州星河科技有限公司: 发报价单",
                  due_at=now - timedelta(hours=1))  # fmt: skip
    open_one = make.customer(pool, name="苏州博远电子有限公司", score=90, grade="A")
    spare = make.customer(pool, name="宁波云启贸易有限公司", score=50)
    fan_out(db.session, now)
    db.session.commit()
    return {"pool": pool, "owned": owned, "open": open_one, "spare": spare}


def test_main_screens_pass_the_csp_and_htmx_still_works(
    live_server, strict, make, rep, manager, scene, login_as, watch, screenshot
):
    page = watch(strict())
    page.goto(f"{live_server}/login")
    watch.check(page, "login")
    screenshot(page, "csp-login-phone")

    # Workbench → the follow-up sheet over the inbox → saved with htmx.
    login_as(page, rep)
    page.locator("#inbox").wait_for()
    watch.check(page, "workbench")
    page.locator(".inbox-item").first.get_by_role("link", name="跟进").click()
    page.locator("#sheet .followup-form").wait_for()
    page.fill("#sheet textarea[name=content]", "电话沟通了报价")
    page.fill("#sheet input[name=next_plan]", "下周再联系")
    page.locator("#sheet .chip", has_text="下周一").click()
    screenshot(page, "csp-followup-sheet-phone")
    watch.check(page, "follow-up sheet")
    page.locator("#sheet button[type=submit]").click()
    page.wait_for_selector("#sheet .followup-form", state="detached")
    assert db.session.scalar(select(FollowUp.content)) == "电话沟通了报价"
    # Polling without eval: app.js sends crm:poll to [data-poll] on visibilitychange. First let the
    # refresh the saved follow-up set off finish: htmx drops a trigger while the element's request is in flight.
    page.wait_for_load_state("networkidle")
    with page.expect_response(lambda r: "/inbox" in r.url, timeout=20_000):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")

    # Pool board → claim in place.
    page.goto(f"{live_server}/pools/{scene['pool'].id}")
    watch.check(page, "pool board")
    page.locator(f"#c-{scene['open'].id}").get_by_role("button", name="领取").click()
    page.locator(f"#c-{scene['open'].id}.is-claimed").wait_for()
    db.session.expire_all()
    assert db.session.get(Customer, scene["open"].id).owner_id == rep.id
    screenshot(page, "csp-pool-board-phone")

    # Customer page.
    page.goto(f"{live_server}/customers/{scene['owned'].id}")
    page.locator("h1").first.wait_for()
    watch.check(page, "customer page")
    screenshot(page, "csp-customer-phone")

    # A manager: the assign form's 取消 (was an onclick) and the pipeline's owner picker (was onchange).
    boss = watch(strict())
    login_as(boss, manager)
    boss.goto(f"{live_server}/pools/{scene['pool'].id}")
    row = boss.locator(f"#c-{scene['spare'].id}")
    row.get_by_role("link", name="分配").click()
    slot = boss.locator(f"#assign-slot-{scene['spare'].id}")
    slot.locator("form").wait_for()
    slot.get_by_role("button", name="取消").click()
    slot.locator("form").wait_for(state="detached")
    watch.check(boss, "manager board")


def test_admin_settings_pass_the_csp_and_confirm_still_asks(
    app, live_server, strict, make, admin, login_as, watch, screenshot
):
    from flask import url_for

    pool = make.pool(name="待删除的池")
    page = watch(strict())
    login_as(page, admin)
    with app.test_request_context():
        settings_url = url_for("reminders.admin_settings")
    for path in (settings_url, "/admin/users", f"/pools/{pool.id}/settings"):
        page.goto(f"{live_server}{path}")
        page.locator("h1, h2").first.wait_for()
        watch.check(page, path)
    screenshot(page, "csp-pool-settings-phone")
    # The delete form's confirm() moved from onsubmit into app.js: dismissing it keeps the pool.
    asked: list[str] = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.locator(".danger-zone button[type=submit]").click()
    page.wait_for_timeout(300)
    assert asked == ["确定删除这个公海吗?"]
    assert page.url.endswith(f"/pools/{pool.id}/settings")
    db.session.expire_all()
    assert db.session.get(Pool, pool.id).deleted_at is None
    page.goto(f"{live_server}{settings_url}")
    screenshot(page, "csp-admin-settings-phone")
    watch.check(page, "admin settings")
