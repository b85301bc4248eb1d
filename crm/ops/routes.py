"""Health for load balancers (``/readyz``), Prometheus metrics (``/metrics``) and the admin 系统状态 page."""

from __future__ import annotations

from flask import Blueprint, jsonify

from crm.access import access
from crm.htmx import render
from crm.models import Role
from crm.ops import metrics, status

bp = Blueprint("ops", __name__)


@bp.route("/readyz")
@access(None)
def readyz():
    """Readiness: the database answers, Redis answers, the schema is at the code's migration head; else 503
    with the reasons (a load balancer stops sending traffic; ``/healthz`` says only that the process is up)."""
    ready = status.readiness()
    return jsonify(
        status="ok" if ready.ok else "unavailable", reasons=ready.reasons
    ), 200 if ready.ok else 503


@bp.route("/metrics")
@access(None)
def metrics_endpoint():
    """Prometheus exposition; a bearer token (``CRM_METRICS_TOKEN``) or an allowed client address is checked
    in ``metrics.allowed`` — anyone else gets a 404."""
    return metrics.exposition()


@bp.route("/admin/system")
@access(Role.ADMIN)
def system():
    """系统状态: processes alive, queues, last sweep/dispatch/backup, delivery failures, database size,
    version. The panel re-polls itself every 15 s while the tab is visible."""
    return render("ops/system.html", "system_panel", **status.snapshot())
