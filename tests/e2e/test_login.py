"""A rep signs in on a phone and sees the workbench shell."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_horizontal_scroll


def test_rep_logs_in_on_a_phone_and_sees_the_workbench(live_server, page, rep, login_as, screenshot):
    page.goto(f"{live_server}/login")
    screenshot(page, "login-phone")
    assert_no_horizontal_scroll(page)
    login_as(page, rep)
    assert page.locator("h1").first.inner_text() == "工作台"
    bottom = page.locator("nav.bottombar")
    assert bottom.is_visible()
    assert "工作台" in bottom.inner_text()
    assert not page.locator("nav.sidebar").is_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, "workbench-phone")


def test_wrong_password_shows_the_error_in_place(live_server, page, rep):
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", rep.email)
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    page.wait_for_selector("text=邮箱或密码不正确")
    assert "/login" in page.url


def test_desktop_shows_the_side_bar(live_server, desktop_page, rep, login_as, screenshot):
    login_as(desktop_page, rep)
    assert desktop_page.locator("nav.sidebar").is_visible()
    assert not desktop_page.locator("nav.bottombar").is_visible()
    screenshot(desktop_page, "workbench-desktop")
