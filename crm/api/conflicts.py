"""``/api/v1/conflicts``: the conflict queue (查重冲突) — list, merge, mark distinct (admins), with the same
services as the web page (``crm.intake.merge``)."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from crm import clock
from crm.access import access
from crm.api.core import ApiError, bp, doc, get_or_404, json_body, jsonable
from crm.extensions import db
from crm.intake import merge
from crm.models import DuplicateConflict, Role

MERGE_BODY = {
    "type": "object",
    "properties": {"keep": {"type": "string", "enum": ["candidate", "customer"], "default": "candidate"}},
}


def conflict_json(c: DuplicateConflict) -> dict:
    return jsonable(
        {
            "id": c.id,
            "customer_id": c.customer_id,
            "candidate_id": c.candidate_id,
            "similarity": c.similarity,
            "reason": c.reason,
            "status": c.status,
            "created_at": c.created_at,
            "resolved_at": c.resolved_at,
            "resolved_by_id": c.resolved_by_id,
        }  # fmt: skip
    )


def _error(exc: merge.MergeError) -> ApiError:
    status = {"forbidden": 403, "not_found": 404, "merged": 409}.get(exc.code, 422)
    return ApiError(status, exc.code, exc.message)


@bp.route("/conflicts", methods=["GET"])
@access(Role.ADMIN)
@doc(
    "冲突队列 (可能重复的客户)",
    query={
        "state": "open (默认) / resolved",
        "limit": "1–200, 默认 50",
        "before_id": "翻页: 上一页最小的 id",
    },
    scope="admin",
)
def conflicts_list():
    """Possible duplicates waiting for a decision (``state=open``), or decided ones (``resolved``)."""
    state = request.args.get("state", "open")
    if state not in ("open", "resolved"):
        raise ApiError(422, "invalid", "state 只能是 open 或 resolved。")
    try:
        limit = min(200, max(1, int(request.args.get("limit", 50))))
        before = int(request.args["before_id"]) if request.args.get("before_id") else None
    except ValueError as exc:
        raise ApiError(422, "invalid", "limit / before_id 必须是整数。") from exc
    items = merge.list_conflicts(db.session, state, limit, before)
    return jsonify(conflicts=[conflict_json(c) for c in items])


@bp.route("/conflicts/<int:conflict_id>/merge", methods=["POST"])
@access(Role.ADMIN)
@doc(
    "合并这对客户 (keep: candidate 保留较早的一条 / customer 保留较新的一条)", body=MERGE_BODY, scope="admin"
)
def conflicts_merge(conflict_id: int):
    """Merge the pair; every follow-up, contact and ledger row is kept on the surviving customer."""
    conflict = get_or_404(DuplicateConflict, conflict_id, "冲突不存在。")
    keep = (json_body() if request.data else {}).get("keep", "candidate")
    if keep not in ("candidate", "customer"):
        raise ApiError(422, "invalid", "keep 只能是 candidate 或 customer。", fields={"keep": ["invalid"]})
    winner, loser = (
        (conflict.customer_id, conflict.candidate_id)
        if keep == "customer"
        else (conflict.candidate_id, conflict.customer_id)
    )
    try:
        customer = merge.merge(db.session, winner, loser, current_user, clock.now(), conflict_id=conflict.id)
    except merge.MergeError as exc:
        raise _error(exc) from exc
    db.session.refresh(conflict)
    return jsonify(conflict=conflict_json(conflict), customer_id=customer.id)


@bp.route("/conflicts/<int:conflict_id>/distinct", methods=["POST"])
@access(Role.ADMIN)
@doc("标记为不同客户 (这对记录不会再被提示)", scope="admin")
def conflicts_distinct(conflict_id: int):
    """Not a duplicate: the pair is never flagged again; a lead held back by it is routed."""
    get_or_404(DuplicateConflict, conflict_id, "冲突不存在。")
    try:
        conflict = merge.mark_distinct(db.session, conflict_id, current_user, clock.now())
    except merge.MergeError as exc:
        raise _error(exc) from exc
    return jsonify(conflict=conflict_json(conflict))
