"""The signed-in home screen (工作台) and the health check."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from crm.access import access
from crm.extensions import db
from crm.htmx import render
from crm.models import Role

bp = Blueprint("main", __name__)


@bp.route("/")
@access(Role.REP)
def home():
    """工作台: today's work — 今日待联系, 逾期未跟进, 高意向未推进, 即将回收 — updating in place, plus the
    team's overdue list and the panels other features add for managers (pending extension requests …)."""
    from crm.inbox.routes import home_context

    return render("main/home.html", "inbox", **home_context())


@bp.route("/healthz")
@access(None)
def healthz():
    """Liveness for process managers: the database answers."""
    db.session.execute(text("SELECT 1"))
    return jsonify(status="ok")
