"""系统状态 on a phone in real Chromium: the panel shows the processes and the backup warning, refreshes
itself in place (htmx), and does not scroll sideways."""

from __future__ import annotations

from playwright.sync_api import expect

from crm import clock
from crm.models import Role
from crm.ops import backup
from crm.ops.runs import beat, record_job
from tests.e2e.conftest import assert_no_horizontal_scroll


def test_system_status_on_a_phone_refreshes_in_place(
    live_server, page, login_as, screenshot, make, app, tmp_path
):
    app.config["CRM_BACKUP_DIR"] = str(tmp_path / "backups")
    admin = make.user(Role.ADMIN, name="周敏")
    beat("worker", pid=31337, host="worker-host-1")
    record_job("dispatch_due", clock.now(), True)
    login_as(page, admin)
    page.goto(f"{live_server}/admin/system")
    panel = page.locator("#system_panel")
    expect(panel).to_contain_text("worker-host-1:31337")
    expect(panel).to_contain_text("超过两天没有备份")
    expect(panel.locator(".stat").first).to_contain_text("运行中 1")  # the web process serving the page
    assert_no_horizontal_scroll(page)
    screenshot(page, "ops_system_phone")

    backup.backup()  # the next poll shows it without a reload
    page.evaluate("htmx.ajax('GET', '/admin/system', {target: '#system_panel', swap: 'outerHTML'})")
    expect(page.locator("#system_panel")).not_to_contain_text("超过两天没有备份")
    expect(page.locator("#system_panel")).to_contain_text("crm-")
