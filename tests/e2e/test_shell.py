"""The shell in a real browser: login page at phone and laptop sizes, toasts for failed htmx requests,
validation errors swapped in place (422), and the language switch."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_horizontal_scroll


def test_login_page_looks_right_on_a_phone_and_a_laptop(live_server, page, desktop_page, screenshot):
    for p, name in ((page, "login-390x844"), (desktop_page, "login-1280x800")):
        p.goto(f"{live_server}/login")
        assert_no_horizontal_scroll(p)
        card = p.locator(".auth-card").bounding_box()
        width = p.viewport_size["width"]
        assert card["x"] >= 0 and card["x"] + card["width"] <= width
        button = p.locator("#login_form button[type=submit]").bounding_box()
        assert button["height"] >= 44  # a comfortable tap target
        if name.startswith("login-1280"):
            assert card["width"] < 600  # not stretched across a laptop screen
        screenshot(p, name)


def test_failed_htmx_request_shows_an_error_toast(live_server, page, rep, login_as):
    login_as(page, rep)
    # A rep's htmx request to an admin-only page fails with 403: the toast says so instead of nothing.
    page.evaluate("htmx.ajax('GET', '/admin/users', {target: '#main', swap: 'innerHTML'})")
    toast = page.locator("#toasts .toast-error")
    toast.wait_for()
    assert "你没有权限执行此操作" in toast.inner_text()
    assert page.locator("h1").first.inner_text() == "工作台"  # the page was left alone


def test_network_failure_shows_an_offline_toast(live_server, page, rep, login_as):
    login_as(page, rep)
    page.route("**/healthz", lambda route: route.abort())
    page.evaluate("() => { htmx.ajax('GET', '/healthz', {target: '#main'}).catch(() => {}); }")
    assert "网络连接失败" in page.locator("#toasts .toast-error").inner_text()


def test_invalid_form_is_swapped_in_place_with_422(live_server, page, admin, login_as, screenshot):
    login_as(page, admin)
    page.goto(f"{live_server}/admin/users/new")
    page.fill("#email", "someone@example")  # the browser's own check lets it through; the server's does not
    page.fill("#name", "新同事")
    page.fill("#password", "long-enough-1")
    with page.expect_response(
        lambda r: r.url.endswith("/admin/users/new") and r.request.method == "POST"
    ) as info:
        page.click("#user_form button[type=submit]")
    assert info.value.status == 422
    errors = page.locator("#user_form .errors")
    errors.first.wait_for()
    text = " ".join(errors.all_inner_texts())
    assert "邮箱格式不正确" in text
    assert page.url.endswith("/admin/users/new")
    assert page.locator("#name").input_value() == "新同事"  # what was typed is kept
    assert page.locator("#user_form").count() == 1  # swapped, not nested
    assert_no_horizontal_scroll(page)
    screenshot(page, "admin-new-user-422-phone")


def test_switching_to_english_on_the_login_page_carries_into_the_app(
    live_server, page, rep, login_as, screenshot
):
    page.goto(f"{live_server}/login")
    page.click("text=English")
    page.wait_for_selector("text=Remember me")
    screenshot(page, "login-english-phone")
    login_as(page, rep)
    assert page.locator("h1").first.inner_text() == "Workbench"
    assert "Workbench" in page.locator("nav.bottombar").inner_text()
