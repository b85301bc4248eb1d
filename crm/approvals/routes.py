"""The managers' 审批 page: extension requests to approve or reject in place, and the way to the spot checks
and the conflict queue with their counts."""

from __future__ import annotations

from flask import Blueprint, g
from flask_login import current_user

from crm.access import access
from crm.approvals.services import Pending, pending_counts
from crm.extensions import db
from crm.htmx import render
from crm.models import Role
from crm.recycle.routes import home_panel_context

bp = Blueprint("approvals", __name__, url_prefix="/approvals")


def badge_counts() -> Pending:
    """The counts for this request's navigation, computed once however many times the layout asks."""
    if "approval_counts" not in g:
        g.approval_counts = pending_counts(db.session, current_user)
    return g.approval_counts


@bp.route("/")
@access(Role.MANAGER)
def index():
    """审批: 延期申请 (approve / reject here), 跟进抽查 and 查重冲突 waiting on me."""
    ctx = home_panel_context(db.session, None, current_user)
    return render("approvals/index.html", "extension_requests", counts=badge_counts(), **ctx)
