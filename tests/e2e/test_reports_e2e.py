"""Dashboards in real Chromium: the manager's 看板 on a 390×844 phone and the admin's on a 1280×800 laptop,
every panel loaded by htmx, no horizontal scroll; the weekly pool review; a bad period. Screenshots in
tests/e2e/screenshots/reports_*.png."""

from __future__ import annotations

import pytest

from crm import clock
from tests.e2e.conftest import assert_no_horizontal_scroll
from tests.test_reports import NOW, world  # noqa: F401  (the hand-built data set)

PERIOD = "start=2026-03-02&end=2026-03-08"
PANELS = ("funnel", "reps", "heatmap", "pools", "channels")


@pytest.fixture(autouse=True)
def _frozen():
    with clock.frozen(NOW):
        yield


def _wait_for_panels(page) -> None:
    for panel in PANELS:
        page.wait_for_selector(f"#panel-{panel} .panel-body")
    assert page.locator("text=加载中…").count() == 0


def test_manager_dashboard_on_a_phone(page, live_server, login_as, manager, world, screenshot):  # noqa: F811
    login_as(page, manager)
    page.goto(f"{live_server}/reports/?{PERIOD}")
    _wait_for_panels(page)
    funnel = page.locator("#panel-funnel table")
    assert "75.0%" in funnel.inner_text()  # communication ÷ lead = 3/4
    assert page.locator("#panel-heatmap svg rect").count() >= 7 * 24
    assert "华东公海" in page.locator("#panel-pools").inner_text()
    assert_no_horizontal_scroll(page)
    screenshot(page, "reports_dashboard_phone")


def test_admin_dashboard_on_a_laptop(desktop_page, live_server, login_as, admin, world, screenshot):  # noqa: F811
    page = desktop_page
    login_as(page, admin)
    page.goto(f"{live_server}/reports/?{PERIOD}")
    _wait_for_panels(page)
    assert "外组销售" not in page.locator("#panel-reps").inner_text()  # no follow-ups, no deals
    assert_no_horizontal_scroll(page)
    screenshot(page, "reports_dashboard_desktop")
    # The filter form swaps the report body in place and keeps the URL shareable.
    page.select_option("#pool", label="华东公海")
    page.click(".report-filter button[type=submit]")
    page.wait_for_url(lambda url: "pool=" in url)
    _wait_for_panels(page)
    assert "华南公海" not in page.locator("#panel-pools table").inner_text()


def test_weekly_review_and_a_bad_period_on_a_phone(page, live_server, login_as, manager, world, screenshot):  # noqa: F811
    login_as(page, manager)
    page.goto(f"{live_server}/reports/review?week=2026-03-02")
    assert "华东公海" in page.inner_text("main")
    assert "7天未跟进" in page.inner_text("main")  # top recycle reason
    assert_no_horizontal_scroll(page)
    screenshot(page, "reports_review_phone")
    page.goto(f"{live_server}/reports/?start=2026-03-08&end=2026-03-02")
    assert "结束日期不能早于开始日期。" in page.inner_text("main")
    assert page.locator(".report-panel").count() == 0
    assert_no_horizontal_scroll(page)
    screenshot(page, "reports_bad_period_phone")
