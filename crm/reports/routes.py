"""Dashboard screens (看板): the page with its filter, one htmx fragment per panel, CSV downloads, and the
weekly pool review (上周公海复盘). Managers see their team, admins everyone; reps are refused (403)."""

from __future__ import annotations

from flask import Blueprint, abort, make_response, request
from flask_login import current_user

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.htmx import render, render_fragment
from crm.models import Role
from crm.reports import review as review_service
from crm.reports import services
from crm.reports.csvout import to_csv
from crm.reports.filters import ReportInputError, parse_filter, pool_choices, team_choices

bp = Blueprint("reports", __name__, url_prefix="/reports")


def _choices() -> dict:
    return {"teams": team_choices(db.session, current_user), "pools": pool_choices(db.session)}


@bp.route("/")
@access(Role.MANAGER)
def dashboard():
    """看板: the filter and a placeholder per panel; each panel loads itself as a fragment."""
    try:
        f = parse_filter(db.session, request.args, current_user, clock.now())
    except ReportInputError as exc:
        return render("reports/dashboard.html", "report_body", status=422, f=None, errors=exc.errors,
                      args=request.args, **_choices())  # fmt: skip
    return render("reports/dashboard.html", "report_body", f=f, errors={}, args=f.args, **_choices())


@bp.route("/panel/<panel>")
@access(Role.MANAGER)
def panel(panel: str):
    """One dashboard panel as an htmx fragment (422 with the message for a bad filter)."""
    if panel not in services.PANELS:
        abort(404)
    try:
        f = parse_filter(db.session, request.args, current_user, clock.now())
    except ReportInputError as exc:
        return render_fragment("reports/panels.html", "invalid", status=422, errors=exc.errors)
    data = services.COMPUTE[panel](db.session, f)
    return render_fragment("reports/panels.html", panel, f=f, data=data, args=f.args)


@bp.route("/export/<table>.csv")
@access(Role.MANAGER)
def export(table: str):
    """A dashboard table as CSV (UTF-8 with BOM, formula-injection safe)."""
    if table not in services.TABLES:
        abort(404)
    try:
        f = parse_filter(db.session, request.args, current_user, clock.now())
    except ReportInputError as exc:
        return render_fragment("reports/panels.html", "invalid", status=422, errors=exc.errors)
    data = services.COMPUTE[services.TABLE_PANEL[table]](db.session, f)
    head, rows = services.TABLES[table](data)
    response = make_response(to_csv(head, rows))
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    name = f"{table}_{f.start.isoformat()}_{f.end.isoformat()}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.route("/review")
@access(Role.MANAGER)
def review():
    """上周公海复盘: per pool the week's KPIs against the week before, top recycle reasons, who claimed
    what, and customers stuck in the pool."""
    try:
        week = review_service.parse_week(request.args.get("week"), clock.now())
        f = review_service.week_filter(db.session, current_user, week, clock.now())
    except ReportInputError as exc:
        return render("reports/review.html", status=422, data=None, errors=exc.errors, args=request.args)
    data = review_service.weekly_review(db.session, f, clock.now())
    return render("reports/review.html", data=data, errors={}, args=request.args)
