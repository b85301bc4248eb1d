"""The pipeline in real Chromium: drag a kanban card at 1280×800 (a stage without a requirement moves at once,
one with a requirement opens its form first), the phone's stage picker at 390×844, and the customer page's
stage form whose requirement part appears when a stage is picked. Each screen is screenshotted."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Opportunity, Quote, Stage, StageChange
from crm.pipeline import services
from tests.e2e.conftest import SHOTS, assert_no_horizontal_scroll


@pytest.fixture
def deals(make, rep):
    pool = make.pool(members=[rep])
    names = ["杭州星河科技有限公司", "苏州博远电子有限公司", "广州睿思信息技术有限公司"]
    customers = [make.customer(pool, owner=rep, name=n, contact_name="王总") for n in names]
    demo = Stage(
        name="方案演示", position=2, kind="open", requirement="none", funnel="communication", active=True
    )
    db.session.add(demo)
    for s in db.session.scalars(select(Stage).where(Stage.position >= 2, Stage.id != demo.id)):
        s.position += 1
    db.session.flush()
    opps = [
        services.create_opportunity(db.session, c, rep, clock.now(), services.OpportunityInput(f"年度采购{i + 1}", 10000 * (i + 1)))
        for i, c in enumerate(customers)
    ]  # fmt: skip
    db.session.commit()
    return opps


def column(page, name: str):
    return page.locator(f".kanban-col[data-stage-name='{name}']")


def stage_of(opp_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Opportunity, opp_id).stage.name


def test_kanban_drag_on_desktop(desktop_page, live_server, login_as, rep, deals, screenshot):
    page = desktop_page
    login_as(page, rep)
    page.goto(f"{live_server}/pipeline")
    card = page.locator(f"#card-{deals[0].id}")
    assert card.is_visible()
    assert page.locator(".kanban-pick").first.is_hidden()  # the phone picker is hidden on a laptop
    screenshot(page, "pipeline_board_desktop")

    # No requirement: the card moves at once.
    card.drag_to(column(page, "方案演示").locator(".kanban-cards"))
    page.wait_for_selector(f".kanban-col[data-stage-name='方案演示'] #card-{deals[0].id}")
    assert stage_of(deals[0].id) == "方案演示"

    # 已报价 requires a quote: the form opens instead of moving.
    page.locator(f"#card-{deals[1].id}").drag_to(column(page, "已报价").locator(".kanban-cards"))
    sheet = page.locator("#sheet .sheet-card")
    sheet.wait_for()
    assert stage_of(deals[1].id) == "新线索"
    sheet.locator("button[type=submit]").click()  # nothing typed: refused in place
    page.wait_for_selector("#sheet .alert")
    assert "报价" in sheet.locator(".alert").inner_text()
    screenshot(page, "pipeline_board_quote_refused_desktop")
    sheet.locator("input[name=item_name]").first.fill("CRM 专业版")
    sheet.locator("input[name=item_qty]").first.fill("5")
    sheet.locator("input[name=item_price]").first.fill("2400")
    sheet.locator("button[type=submit]").click()
    page.wait_for_selector(f".kanban-col[data-stage-name='已报价'] #card-{deals[1].id}")
    assert page.locator("#sheet").inner_html().strip() == ""
    assert stage_of(deals[1].id) == "已报价"
    assert db.session.scalar(select(Quote.amount)) == 12000
    screenshot(page, "pipeline_board_after_moves_desktop")
    assert_no_horizontal_scroll(page)


def test_stage_picker_on_phone(page, live_server, login_as, rep, deals, screenshot):
    login_as(page, rep)
    page.goto(f"{live_server}/pipeline")
    assert_no_horizontal_scroll(page)
    screenshot(page, "pipeline_board_phone")
    picker = page.locator(f"#card-{deals[2].id} select[data-stage-picker]")
    assert picker.is_visible()
    picker.select_option(label="输单")
    sheet = page.locator("#sheet .sheet-card")
    sheet.wait_for()
    assert stage_of(deals[2].id) == "新线索"
    sheet.locator("select[name=lost_reason]").select_option("价格太高")
    screenshot(page, "pipeline_lost_form_phone")
    sheet.locator("button[type=submit]").click()
    page.wait_for_selector(f"#card-{deals[2].id}", state="detached")
    db.session.expire_all()
    opp = db.session.get(Opportunity, deals[2].id)
    assert opp.status == "lost" and opp.lost_reason == "价格太高"
    # A stage without a requirement moves straight from the picker.
    page.locator(f"#card-{deals[0].id} select[data-stage-picker]").select_option(label="方案演示")
    page.wait_for_selector(f".kanban-col[data-stage-name='方案演示'] #card-{deals[0].id}")
    assert_no_horizontal_scroll(page)


def test_customer_page_stage_form_on_phone(page, live_server, login_as, rep, deals, screenshot):
    login_as(page, rep)
    opp = deals[0]
    page.goto(f"{live_server}/customers/{opp.customer_id}")
    panel = page.locator("#opp-panel")
    panel.locator("summary", has_text="推进阶段").first.click()
    panel.locator("select[name=stage]").first.select_option(label="成交")
    panel.locator(".stage-form input[name=contract_number]").wait_for()
    panel.locator(".stage-form input[name=contract_number]").fill("HT-E2E-1")
    panel.locator(".stage-form input[name=amount]").fill("30000")
    panel.locator(".stage-form input[name=tax_id]").fill("12345")  # too short
    panel.locator(".stage-form button[type=submit]").click()
    page.wait_for_selector("#opp-panel .errors")
    assert "税号格式" in panel.inner_text()
    assert_no_horizontal_scroll(page)
    screenshot(page, "pipeline_contract_refused_phone")
    panel.screenshot(path=str(SHOTS / "pipeline_contract_refused_panel_phone.png"))
    panel.locator(".stage-form input[name=tax_id]").fill("91310000MA1FL8XQ30")
    panel.locator(".stage-form button[type=submit]").click()
    page.wait_for_selector("#opp-panel .badge-ok")
    assert stage_of(opp.id) == "成交"
    # The timeline already holds the opportunity's creation (a stage event): wait for the won one itself.
    page.locator("#timeline li", has_text="HT-E2E-1").first.wait_for()
    assert "成交" in page.locator("#timeline").inner_text()
    screenshot(page, "pipeline_customer_won_phone")
    panel.screenshot(path=str(SHOTS / "pipeline_customer_won_panel_phone.png"))
    assert db.session.scalar(
        select(StageChange).where(StageChange.opportunity_id == opp.id).order_by(StageChange.id.desc())
    )


def test_convert_and_settings_pages(page, desktop_page, live_server, login_as, make, rep, admin, screenshot):
    pool = make.pool(members=[rep])
    lead = make.customer(pool, owner=rep, name="成都启明教育科技有限公司", contact_name="刘老师")
    login_as(page, rep)
    page.goto(f"{live_server}/customers/{lead.id}/convert")
    assert_no_horizontal_scroll(page)
    screenshot(page, "pipeline_convert_phone")
    page.locator("#convert_form button[type=submit]").click()
    page.wait_for_url(f"**/customers/{lead.id}")
    assert "成都启明教育科技有限公司" in page.locator("#opp-panel").inner_text()
    login_as(desktop_page, admin)
    desktop_page.goto(f"{live_server}/admin/pipeline/stages")
    screenshot(desktop_page, "pipeline_stage_settings_desktop")
    assert "输单原因" in desktop_page.inner_text("body")
