"""The pool board on a real phone-sized Chromium: claim in place, the holding counter, the second rep's
"已被 XX 领取" answer; screenshots of the board, the customer page and the pool settings form."""

from __future__ import annotations

from crm.extensions import db
from crm.models import Customer, Role
from tests.e2e.conftest import assert_no_horizontal_scroll


def test_rep_claims_in_place_and_a_second_rep_gets_the_taken_answer(
    live_server, page, new_page, make, rep, login_as, screenshot
):
    other = make.user(Role.REP, name="小李")
    pool = make.pool(members=[rep, other], name="新线索池", daily_claim_limit=3, mask_contacts=True)
    target = make.customer(pool, name="杭州星河科技有限公司", score=92, grade="A", phone="13812345678",
                           contact_name="张伟", region="华东", industry="制造业")  # fmt: skip
    for i in range(6):
        make.customer(pool, name=f"宁波云启贸易有限公司{i}", score=60 - i, region="华东", industry="零售")

    second = new_page()
    login_as(second, other)
    second.goto(f"{live_server}/pools/{pool.id}")  # the second rep has the same board open

    login_as(page, rep)
    page.goto(f"{live_server}/pools/{pool.id}")
    row = page.locator(f"#c-{target.id}")
    assert "138****5678" in row.inner_text()
    counter = page.locator("#holding-counter")
    assert "持有 0/20" in counter.inner_text().replace("\n", " ") and "今日已领 0/3" in counter.inner_text()
    assert_no_horizontal_scroll(page)
    screenshot(page, "pool-board-phone")

    row.get_by_role("button", name="领取").click()
    page.locator(f"#c-{target.id}.is-claimed").wait_for()
    assert "已领取" in page.locator(f"#c-{target.id}").inner_text()
    assert "13812345678" in page.locator(f"#c-{target.id}").inner_text()  # unmasked once claimed
    page.wait_for_function("document.querySelector('#holding-counter [data-held]').textContent === '1'")
    assert "今日已领 1/3" in page.locator("#holding-counter").inner_text()
    assert page.locator(f"#c-{target.id} >> text=已领取").count() == 1  # the same row, swapped in place
    assert page.locator("li.pool-row").count() == 7
    screenshot(page, "pool-board-claimed-phone")

    second.locator(f"#c-{target.id}").get_by_role("button", name="领取").click()
    second.locator(f"#c-{target.id} >> text=已被 小王 领取。").wait_for()
    second.locator("#toasts >> text=已被 小王 领取。").wait_for()
    assert "13812345678" not in second.locator(f"#c-{target.id}").inner_text()  # still masked for the loser
    screenshot(second, "pool-board-taken-phone")
    db.session.expire_all()
    assert db.session.get(Customer, target.id).owner_id == rep.id

    # Filters and load-more work on the phone too.
    page.locator("summary", has_text="筛选").click()
    page.select_option("select[name=industry]", "零售")
    page.wait_for_function("document.querySelectorAll('li.pool-row').length === 6")
    assert "industry=" in page.url


def test_customer_page_and_pool_settings_on_phone_and_desktop(
    live_server, page, desktop_page, make, rep, manager, admin, login_as, screenshot
):
    pool = make.pool(members=[rep], admins=[manager], name="华东区域池")
    customer = make.customer(pool, owner=rep, name="苏州博远制造有限公司", phone="13912345678", wechat="boyuan_li",
                             contact_name="李娜", region="华东", industry="制造业")  # fmt: skip
    make.contact(customer, name="王工", phone="13700001111", wechat="wanggong")
    login_as(page, rep)
    page.goto(f"{live_server}/customers/{customer.id}")
    page.locator("#timeline li").first.wait_for()
    assert page.locator('a[href="tel:13912345678"]').count() >= 1
    assert page.locator('#quick-contact [data-copy="boyuan_li"]').count() == 1
    assert page.locator('.cp-bar [data-copy="boyuan_li"]').count() == 1  # the sticky action bar's 微信
    assert_no_horizontal_scroll(page)
    screenshot(page, "customer-page-phone")
    page.locator("summary", has_text="退回公海").click()
    # The browser checks the required fields first; skip that to see the server's answer in place.
    page.evaluate("document.getElementById('release_form').noValidate = true")
    page.get_by_role("button", name="确认退回").click()
    page.locator("#release_form .errors").first.wait_for()  # reason and note are required, errors in place
    assert "请选择退回原因" in page.locator("#release_form").inner_text()
    page.select_option("#release_form select[name=reason]", "联系不上")
    page.fill("#release_form textarea[name=note]", "电话三次未接,微信已加未回,建议下周再试。")
    page.get_by_role("button", name="确认退回").click()
    page.wait_for_url(f"{live_server}/customers")
    assert "已退回「苏州博远制造有限公司」到公海" in page.locator(".flash").inner_text()
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id is None

    login_as(desktop_page, admin)
    for i in range(4):
        make.customer(pool, name=f"上海星河科技有限公司{i}", score=80 - i, region="华东", industry="互联网",
                      phone=f"1381234560{i}", contact_name="刘洋")  # fmt: skip
    desktop_page.goto(f"{live_server}/pools/{pool.id}")
    desktop_page.locator("li.pool-row input[type=checkbox]").first.check()
    desktop_page.locator("#bulk-assign").wait_for()  # the bulk bar appears once a row is selected
    screenshot(desktop_page, "pool-board-desktop")
    desktop_page.goto(f"{live_server}/customers/{customer.id}")
    desktop_page.locator("#timeline li").first.wait_for()
    screenshot(desktop_page, "customer-page-desktop")
    desktop_page.goto(f"{live_server}/pools/{pool.id}/settings")
    screenshot(desktop_page, "pool-form-desktop")
    desktop_page.evaluate("document.getElementById('pool_form').noValidate = true")
    desktop_page.fill("input[name=daily_claim_limit]", "0")
    desktop_page.get_by_role("button", name="保存").click()
    desktop_page.locator("#field-daily_claim_limit .errors").wait_for()

    admin_phone = page.context.browser.new_context(
        viewport={"width": 390, "height": 844}, locale="zh-CN"
    ).new_page()
    login_as(admin_phone, admin)
    admin_phone.goto(f"{live_server}/pools/{pool.id}/settings")
    assert_no_horizontal_scroll(admin_phone)
    screenshot(admin_phone, "pool-form-phone")
    admin_phone.goto(f"{live_server}/pools")
    screenshot(admin_phone, "pool-list-phone")
    admin_phone.goto(f"{live_server}/customers")
    assert_no_horizontal_scroll(admin_phone)
    screenshot(admin_phone, "customer-list-phone")
    admin_phone.context.close()
