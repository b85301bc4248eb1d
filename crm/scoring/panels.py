"""What scoring adds to other screens: the score panel on the customer page (each factor's points, the
grade, the win probability), the keys it adds to ``GET /api/v1/customers/<id>``, a "source" panel with the
intake data, and the managers' workbench panel on hot-customer focus. Importing this module also
connects the scoring signal receivers."""

from __future__ import annotations

from sqlalchemy import func, select

from crm import clock
from crm.hooks import register_customer_json, register_customer_panel, register_home_panel
from crm.models import Activity, DuplicateConflict, Role
from crm.scoring import config, report
from crm.scoring import services as _services  # noqa: F401  (connects the signal receivers)
from crm.scoring.model import dimension_totals, explain


def score_context(session, customer, user) -> dict | None:
    if customer is None:
        return None
    cfg = config.get(session)
    return {
        "customer": customer,
        "lines": explain(customer.score_breakdown),
        "dimensions": dimension_totals(customer.score_breakdown),
        "show_win": cfg["win_probability"],
        "hot_threshold": cfg["hot_threshold"],
    }


def source_context(session, customer, user) -> dict | None:
    if customer is None:
        return None
    duplicates = session.scalar(
        select(func.count())
        .select_from(Activity)
        .where(Activity.customer_id == customer.id, Activity.kind == "duplicate")
    )
    open_conflicts = session.scalar(
        select(func.count())
        .select_from(DuplicateConflict)
        .where(
            DuplicateConflict.status == "open",
            (DuplicateConflict.customer_id == customer.id) | (DuplicateConflict.candidate_id == customer.id),
        )
    )
    return {"customer": customer, "duplicates": duplicates or 0, "open_conflicts": open_conflicts or 0}


def customer_json(session, customer, user) -> dict:
    return {
        "score": customer.score,
        "grade": customer.grade,
        "is_hot": customer.is_hot,
        "scored_at": customer.scored_at.isoformat() if customer.scored_at else None,
        "score_breakdown": [
            {k: line[k] for k in ("dimension", "factor", "value", "points", "label")}
            for line in explain(customer.score_breakdown)
        ],
        "win_probability": customer.win_probability,
        "source": customer.source,
        "channel": customer.channel,
        "campaign": customer.campaign,
        "utm": customer.utm or {},
        "arrived_at": customer.arrived_at.isoformat() if customer.arrived_at else None,
        "lifecycle": customer.lifecycle,
    }


def focus_context(session, _subject, user) -> dict | None:
    if user.role not in (Role.MANAGER, Role.ADMIN):
        return None
    rows, total, hot = report.hot_share(session, user, clock.now())
    if not rows:
        return None
    return {"total": total, "hot": hot, "reps": len(rows)}


register_customer_panel(20, "score", "scoring/_panel.html", score_context)
register_customer_panel(80, "source", "intake/_source_panel.html", source_context)
register_customer_json(customer_json)
register_home_panel(60, "hot_focus", "scoring/_home_panel.html", focus_context, min_role=Role.MANAGER)
