"""Browser tests: the app served by a real WSGI server in a thread, driven by Debian's Chromium through
Playwright (its own browser download does not work here).

Fixtures: ``live_server`` (base URL), ``browser`` (session-wide Chromium), ``page`` (390×844 phone),
``desktop_page`` (1280×800), ``login_as(page, user)``, ``screenshot(page, name)`` (tests/e2e/screenshots/).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.factories import PASSWORD

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(__file__).parent / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def live_server(app):
    """Serve ``app`` on 127.0.0.1 (random port) for the duration of a test."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _page(browser, viewport, **kwargs):
    # Playwright's wait_for_function polls string predicates with eval() inside the page, which the app's
    # Content-Security-Policy forbids; test_csp_e2e.py opens its pages with the policy enforced.
    kwargs.setdefault("bypass_csp", True)
    context = browser.new_context(viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai", **kwargs)
    page = context.new_page()
    page.set_default_timeout(10_000)
    return context, page


@pytest.fixture
def page(browser):
    """A phone-sized page (390×844, touch)."""
    context, page = _page(browser, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield page
    context.close()


@pytest.fixture
def desktop_page(browser):
    context, page = _page(browser, DESKTOP)
    yield page
    context.close()


@pytest.fixture
def new_page(browser):
    """Open extra independent pages (another user's phone): ``new_page()`` / ``new_page(desktop=True)``."""
    contexts = []

    def make(desktop: bool = False):
        if desktop:
            context, page = _page(browser, DESKTOP)
        else:
            context, page = _page(browser, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
        contexts.append(context)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def login_as(live_server):
    def login(page, user, password: str = PASSWORD):
        page.goto(f"{live_server}/login")
        page.fill("input[name=email]", user.email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        return page

    return login


@pytest.fixture
def screenshot():
    SHOTS.mkdir(exist_ok=True)

    def shoot(page, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot


def assert_no_horizontal_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"page scrolls horizontally by {overflow}px"
