"""Intake and scoring in a real browser: 新建 with live duplicate warnings on a phone, import, the conflict
queue, lead forms and the public form in an iframe, scoring settings, report and the score panel."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from openpyxl import Workbook
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.intake.services import LeadData, intake
from crm.models import BehaviorEvent, Customer, FollowUp
from crm.scoring import services as scoring
from tests.e2e.conftest import assert_no_horizontal_scroll


@pytest.fixture
def app_config(app_config):
    return app_config | {"CRM_FORM_MIN_SECONDS": 0}


@pytest.fixture
def pool(make, rep, manager, admin):
    return make.pool("新线索池", kind="lead", members=[rep], admins=[manager, admin])


def test_rep_enters_a_lead_on_a_phone_and_is_warned_of_a_duplicate(live_server, page, rep, manager, make, pool,
                                                                     login_as, screenshot):  # fmt: skip
    make.customer(pool, owner=manager, name="无锡启明光电有限公司", phone="13912340000")
    login_as(page, rep)
    page.click("nav.bottombar >> text=新建")
    page.wait_for_selector("h1:has-text('新建线索')")
    assert_no_horizontal_scroll(page)
    screenshot(page, "intake-new-phone")
    page.fill("input[name=name]", "无锡启明光电科技有限公司")
    page.fill("input[name=phone]", "139 1234 0000")
    page.wait_for_selector("#dup_check .dup-exact")
    warning = page.inner_text("#dup_check")
    assert "无锡启明光电有限公司" in warning and manager.name in warning
    assert_no_horizontal_scroll(page)
    screenshot(page, "intake-new-duplicate-warning-phone")
    page.fill("input[name=name]", "常州天成机械有限公司")
    page.fill("input[name=phone]", "13861234567")
    page.fill("input[name=contact_name]", "蒋工")
    page.wait_for_function("!document.querySelector('#dup_check .dup-exact')")
    page.click("text=更多信息")
    page.fill("input[name=industry]", "制造业")
    page.fill("input[name=company_size]", "300")
    page.click("button:has-text('保存线索')")
    page.wait_for_selector(".flash-success")
    assert "已创建线索「常州天成机械有限公司」" in page.inner_text(".flash-success")
    screenshot(page, "intake-new-saved-phone")
    assert db.session.scalar(select(Customer).where(Customer.name == "常州天成机械有限公司")) is not None


def _xlsx() -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(["公司名称", "联系人", "手机号码", "邮箱", "行业", "员工人数", "来源渠道"])
    ws.append(["上海晨光信息技术有限公司", "王磊", "13800138001", "wl@cg.cn", "互联网", "120", "展会"])
    ws.append(["杭州卓越软件有限公司", "李娜", "0571-88888888", "", "教育", "50-99人", "公众号"])
    ws.append(["南京汇通物流有限公司", "刘洋", "12345", "", "", "", ""])
    ws.append(["", "", "", "chen@", "", "", ""])
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def test_manager_imports_a_spreadsheet_with_a_preview_of_row_errors(live_server, desktop_page, new_page, manager,
                                                                     pool, login_as, screenshot):  # fmt: skip
    page = desktop_page
    login_as(page, manager)
    page.goto(f"{live_server}/intake/imports")
    screenshot(page, "intake-import-upload-desktop")
    page.set_input_files("input[name=file]", files=[{"name": "展会线索.xlsx", "mimeType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "buffer": _xlsx()}])  # fmt: skip
    page.select_option("select[name=pool_id]", str(pool.id))
    page.fill("input[name=campaign]", "2026春季展会")
    page.click("button:has-text('上传并识别列')")
    page.wait_for_selector("text=1. 对应列")
    assert page.input_value("#col-2") == "phone"
    screenshot(page, "intake-import-mapping-desktop")
    page.click("button:has-text('预览导入结果')")
    page.wait_for_selector("#preview")
    assert "不是有效的电话号码" in page.inner_text("#preview")
    screenshot(page, "intake-import-preview-desktop")
    batch_url = page.url
    phone = new_page()
    login_as(phone, manager)
    phone.goto(batch_url)
    phone.click("button:has-text('预览导入结果')")
    phone.wait_for_selector("#preview")
    assert_no_horizontal_scroll(phone)
    screenshot(phone, "intake-import-preview-phone")
    page.click("button:has-text('导入 2 条有效数据')")
    page.wait_for_selector("text=导入完成")
    screenshot(page, "intake-import-done-desktop")
    assert db.session.scalar(select(Customer.campaign).limit(1)) == "2026春季展会"


def test_admin_merges_a_possible_duplicate_in_the_queue(live_server, page, desktop_page, admin, make, pool, login_as,
                                                        screenshot, session):  # fmt: skip
    make.customer(pool, name="苏州瑞丰新材料有限公司", contact_name="周总", phone="13612345678")
    intake(session, [LeadData(name="苏州瑞丰新材料科技有限公司", contact_name="周先生", phone="13600136000",
                              channel="展会")], source="form", now=clock.now())  # fmt: skip
    login_as(desktop_page, admin)
    desktop_page.goto(f"{live_server}/intake/conflicts")
    screenshot(desktop_page, "intake-conflicts-desktop")
    login_as(page, admin)
    page.goto(f"{live_server}/intake/conflicts")
    assert "冲突率" in page.inner_text("main")
    assert_no_horizontal_scroll(page)
    screenshot(page, "intake-conflicts-phone")
    page.click("a:has-text('合并…')")  # both records side by side in a sheet, no native confirm()
    page.click("button:has-text('保留已有,合并新线索')")
    page.wait_for_function("() => document.querySelector('main').innerText.includes('没有待处理的查重冲突')")
    assert "待处理 (0)" in page.inner_text("main")  # the tab's count refreshed with the list
    screenshot(page, "intake-conflicts-merged-phone")


def test_admin_creates_a_lead_form_and_a_visitor_fills_it_in_an_iframe(live_server, page, desktop_page, new_page,
                                                                         admin, pool, login_as, screenshot):  # fmt: skip
    login_as(desktop_page, admin)
    desktop_page.goto(f"{live_server}/intake/forms")
    desktop_page.fill("input[name=name]", "官网预约演示")
    desktop_page.fill("input[name=slug]", "demo")
    desktop_page.fill("input[name=channel]", "官网表单")
    desktop_page.fill("input[name=campaign]", "2026春季展会")
    desktop_page.fill("textarea[name=intro]", "留下联系方式,顾问将在 1 个工作日内联系您。")
    desktop_page.click("button:has-text('保存')")
    desktop_page.wait_for_selector("#snippet")
    assert "/f/demo" in desktop_page.inner_text("#snippet")
    screenshot(desktop_page, "intake-lead-forms-desktop")
    login_as(page, admin)
    page.goto(desktop_page.url)
    assert_no_horizontal_scroll(page)
    screenshot(page, "intake-lead-forms-phone")

    visitor = new_page()
    visitor.set_content(
        f'<html><head><meta name="viewport" content="width=device-width, initial-scale=1"></head><body style="margin:0"><h3 style="font-family:sans-serif;padding:8px">合作伙伴网站</h3>'
        f'<iframe src="{live_server}/f/demo?utm_source=partner" style="width:100%;height:760px;border:0"></iframe></body></html>'
    )
    frame = visitor.frame_locator("iframe")
    frame.locator("input[name=contact_name]").fill("钱先生")
    frame.locator("input[name=phone]").fill("13812345678")
    frame.locator("input[name=name]").fill("嘉兴瑞丰纺织有限公司")
    screenshot(visitor, "intake-public-form-in-iframe-phone")
    frame.locator("button:has-text('提交')").click()
    frame.locator("text=提交成功").wait_for()
    screenshot(visitor, "intake-public-form-thanks-phone")
    customer = db.session.scalar(select(Customer))
    assert customer.source == "form" and customer.utm == {"utm_source": "partner"}


def test_scoring_settings_report_and_score_panel(live_server, app, page, desktop_page, new_page, admin, manager, rep,
                                                  make, pool, login_as, screenshot, session):  # fmt: skip
    from flask import render_template_string

    from crm.access import access
    from crm.hooks import CUSTOMER_PANELS, render_panels
    from crm.models import Role

    @access(Role.REP)
    def panels_page(customer_id: int):
        customer = db.session.get(Customer, customer_id)
        shown = render_panels(CUSTOMER_PANELS, db.session, customer, admin)
        return render_template_string(
            '{% extends "base.html" %}{% block content %}<div class="page-head"><h1>{{ c.name }}</h1></div>'
            "{% for panel, ctx in shown %}{% with %}{% set customer = ctx.customer %}"
            "{% include panel.template %}{% endwith %}{% endfor %}{% endblock %}",
            c=customer, shown=[(p, ctx) for p, ctx in shown], **(shown[0][1] if shown else {}),
        )  # fmt: skip

    app.add_url_rule("/test/customers/<int:customer_id>", "test_panels", panels_page)
    now = clock.now()
    hot = make.customer(pool, owner=rep, name="深圳博远金融科技有限公司", industry="金融", job_level="决策层",
                        company_size=1500, region="华南", channel="老客户转介绍", email="s@by.cn")  # fmt: skip
    cold = [make.customer(pool, owner=rep, industry="餐饮") for _ in range(3)]
    session.add_all(BehaviorEvent(customer_id=hot.id, type=t, at=now - timedelta(days=2), data={})
                    for t in ("download", "form_submit", "email_open"))  # fmt: skip
    for i, c in enumerate([hot, hot, hot, cold[0]]):
        session.add(FollowUp(customer_id=c.id, user_id=rep.id, at=now - timedelta(days=i + 1), channel="phone",
                             content="沟通", next_plan="跟进", next_contact_at=now + timedelta(days=1), goal_met=True,
                             score_at=90 if c is hot else 20))  # fmt: skip
    session.commit()
    scoring.recompute(session, [hot.id, *[c.id for c in cold]], now)
    session.commit()

    login_as(desktop_page, admin)
    desktop_page.goto(f"{live_server}/scoring/settings")
    screenshot(desktop_page, "scoring-settings-desktop")
    desktop_page.fill("textarea[name=industry]", "金融=abc")
    desktop_page.click("button:has-text('保存并重新计算评分')")
    desktop_page.wait_for_selector("text=第 1 行应写成")
    login_as(page, admin)
    page.goto(f"{live_server}/scoring/settings")
    assert_no_horizontal_scroll(page)
    screenshot(page, "scoring-settings-phone")
    page.goto(f"{live_server}/test/customers/{hot.id}")
    page.wait_for_selector("#panel-score")
    assert "合计" not in page.inner_text("#panel-score")  # collapsed to the total and the four dimensions
    page.locator("#panel-score summary").click()
    panel = page.inner_text("#panel-score")
    assert "行业: 金融" in panel and "合计" in panel
    assert_no_horizontal_scroll(page)
    screenshot(page, "scoring-panel-phone")

    manager_page = new_page(desktop=True)
    login_as(manager_page, manager)
    manager_page.goto(f"{live_server}/scoring/report")
    assert rep.name in manager_page.inner_text("table")
    screenshot(manager_page, "scoring-report-desktop")
    manager_phone = new_page()
    login_as(manager_phone, manager)
    manager_phone.goto(f"{live_server}/scoring/report")
    assert_no_horizontal_scroll(manager_phone)
    screenshot(manager_phone, "scoring-report-phone")
