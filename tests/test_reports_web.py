"""Dashboard screens: who may open them, fragments, CSV downloads (safe and Excel-friendly), bad filters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from crm import clock
from crm.extensions import db
from crm.models import Reminder, Role
from crm.reports.csvout import safe_cell, to_csv

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
PANELS = ("funnel", "reps", "heatmap", "pools", "channels")


@pytest.fixture(autouse=True)
def _frozen():
    with clock.frozen(NOW):
        yield


def test_reps_are_refused_everywhere(rep_client):
    for url in ["/reports/", "/reports/panel/funnel", "/reports/export/reps.csv", "/reports/review"]:
        assert rep_client.get(url).status_code == 403, url


def test_dashboard_page_loads_each_panel_lazily(manager_client):
    page = manager_client.get("/reports/?preset=week")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for panel in PANELS:
        assert f"/reports/panel/{panel}?preset=week" in html
    assert html.count('hx-trigger="load"') == len(PANELS)
    assert 'class="nav' not in html or "看板" in html


@pytest.mark.parametrize("panel", PANELS)
def test_each_panel_renders_as_a_fragment(manager_client, panel):
    resp = manager_client.get(
        f"/reports/panel/{panel}?start=2026-03-02&end=2026-03-08", headers={"HX-Request": "true"}
    )
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert "<html" not in body and "/reports/export/" in body


def test_unknown_panel_is_404(manager_client):
    assert manager_client.get("/reports/panel/nope").status_code == 404
    assert manager_client.get("/reports/export/nope.csv").status_code == 404


def test_end_before_start_is_422_with_the_message_and_no_panels(manager_client):
    resp = manager_client.get("/reports/?start=2026-03-08&end=2026-03-02")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "结束日期不能早于开始日期。" in body and "/reports/panel/" not in body
    frag = manager_client.get("/reports/panel/funnel?start=2026-03-08&end=2026-03-02")
    assert frag.status_code == 422 and "结束日期不能早于开始日期。" in frag.get_data(as_text=True)
    assert manager_client.get("/reports/export/funnel.csv?start=bad").status_code == 422
    assert manager_client.get("/reports/?pool=123456").status_code == 422
    assert manager_client.get("/reports/review?week=2026-13-01").status_code == 422


def test_csv_is_utf8_with_bom_and_opens_as_a_table(admin_client, make):
    make.pool('=HYPERLINK("http://x")')
    resp = admin_client.get("/reports/export/pools.csv?start=2026-03-02&end=2026-03-08")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in resp.headers["Content-Disposition"]
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][0] == "公海池"
    assert any(r[0] == '\'=HYPERLINK("http://x")' for r in rows[1:])


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"])
def test_formula_like_cells_get_a_leading_apostrophe(text):
    assert safe_cell(text) == "'" + text
    assert safe_cell("华东 =1") == "华东 =1"
    assert safe_cell(-5) == "-5"  # numbers stay numbers


def test_to_csv_neutralises_every_cell():
    out = to_csv(["=h"], [["-2+3", 4]]).decode("utf-8-sig")
    assert out == "'=h\r\n'-2+3,4\r\n"


def test_review_page_renders_for_managers(manager_client, make, rep):
    make.pool("华东公海", members=[rep])
    resp = manager_client.get("/reports/review")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "2026-03-02 – 2026-03-08" in body and "华东公海" in body
    assert manager_client.get("/reports/review?week=2027-01-01").status_code == 422


def test_weekly_digest_is_one_reminder_per_manager_and_week(app, make, manager, admin, rep):
    from sqlalchemy import select

    from crm.reports.review import send_weekly_digest

    make.pool("华东公海", members=[rep])
    assert send_weekly_digest(db.session, NOW) == 2  # the manager and the admin, not the rep
    assert send_weekly_digest(db.session, NOW) == 0  # idempotent for the week
    db.session.commit()
    rows = db.session.scalars(select(Reminder).where(Reminder.kind == "weekly_digest")).all()
    assert {r.user_id for r in rows} == {manager.id, admin.id}
    assert all(r.unique_key.endswith(":2026-03-02") and "03/02" in r.title for r in rows)
    assert rows[0].due_at == datetime(2026, 3, 9, 1, 0, tzinfo=UTC)  # Monday 09:00 Shanghai
    assert all(u.role != Role.REP for u in (manager, admin))
