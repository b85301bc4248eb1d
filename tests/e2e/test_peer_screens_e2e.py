"""Peer features on the phone (390×844): a locked customer's page with its unlock button, and the board
showing when an embargoed customer opens — no horizontal scroll."""

from __future__ import annotations

from datetime import timedelta

from crm import clock
from crm.extensions import db
from crm.models import Role
from tests.e2e.conftest import assert_no_horizontal_scroll


def test_lock_and_embargo_on_the_phone(live_server, page, login_as, screenshot, make, manager):
    level = make.level(cap=20)
    level.lock_quota = 2
    rep = make.user(Role.REP, level=level, team=manager.team, name="小李")
    db.session.commit()
    owned_pool = make.pool("华东客户池", members=[rep])
    customer = make.customer(owned_pool, owner=rep, name="杭州星河科技有限公司")
    embargoed = make.pool("新线索池", members=[rep], embargo_hours=48)
    waiting = make.customer(
        embargoed, name="苏州新源电子有限公司", arrived_at=clock.now() - timedelta(hours=1)
    )
    login_as(page, rep)
    page.goto(f"{live_server}/customers/{customer.id}")
    page.get_by_role("button", name="锁定").click()
    page.wait_for_selector("text=已锁定,不会被回收")
    assert page.get_by_role("button", name="解除锁定").is_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, "peer_locked_customer")
    page.goto(f"{live_server}/pools/{embargoed.id}")
    row = page.locator(f"#c-{waiting.id}")
    assert "起可领" in row.inner_text()
    assert row.get_by_role("button", name="领取").count() == 0  # opens later: no claim button yet
    assert_no_horizontal_scroll(page)
    screenshot(page, "peer_embargo_board")
