"""Task handlers for long operations that are one service call with a progress callback (score recompute
after new weights). Each is safe to run again: it recomputes from the current rules."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy.orm import Session

from crm import clock
from crm.models import Task


def score_recompute(session: Session, task: Task, progress) -> dict:
    """Every live customer's score under the saved rules (the nightly pass, run now)."""
    from crm.scoring import services

    progress(0, stage="work")
    result = services.recompute_all(session, clock.now(), progress=progress)
    return {
        "customers": result["customers"],
        "changed": result["changed"],
        "crossed_hot": result["crossed_hot"],
    }


def score_summary(task: Task) -> str:
    r = task.result
    return _("已重算 %(n)s 位客户的评分,%(changed)s 位有变化,%(hot)s 位新进入高分。", n=r.get("customers", 0),
             changed=r.get("changed", 0), hot=r.get("crossed_hot", 0))  # fmt: skip
