"""``/api/v1/spot-checks`` (跟进抽查: the latest sample, mark genuine/fake; managers) and
``/api/v1/notifications`` (站内通知: list, mark read) — the same services as the web pages."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from crm import clock
from crm.access import access
from crm.api.core import ApiError, bp, doc, json_body, jsonable
from crm.extensions import db
from crm.followups import spotcheck
from crm.models import Role
from crm.reminders import dispatch

MARK_BODY = {
    "type": "object",
    "required": ["verdict"],
    "properties": {
        "verdict": {"type": "string", "enum": list(spotcheck.VERDICTS)},
        "note": {"type": "string"},
    },
}
READ_BODY = {
    "type": "object",
    "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "description": "省略: 全部已读"}},
}


def check_json(check) -> dict:
    fu = check.followup
    return jsonable(
        {
            "id": check.id,
            "sampled_on": check.sampled_on,
            "verdict": check.verdict,
            "checked_at": check.checked_at,
            "note": check.note,
            "followup": {
                "id": fu.id,
                "customer_id": fu.customer_id,
                "user_id": fu.user_id,
                "channel": fu.channel,
                "content": fu.content,
                "at": fu.at,
            },
        }  # fmt: skip
    )


@bp.route("/spot-checks", methods=["GET"])
@access(Role.MANAGER)
@doc(
    "跟进抽查: 最近一天的抽样 (all=true: 最近 100 条; pending=true: 只看未判定的)",
    query={"all": "true/false", "pending": "true/false"},
    scope="read",
)
def spot_checks_list():
    """The sampled follow-ups the caller checks (admins: everyone's): by default the latest day's sample."""
    pending = request.args.get("pending") in ("1", "true")
    checks = spotcheck.visible_checks(db.session, current_user, pending_only=pending)
    if request.args.get("all") not in ("1", "true") and checks:
        latest = max(c.sampled_on for c in checks)
        checks = [c for c in checks if c.sampled_on == latest]
    return jsonify(spot_checks=[check_json(c) for c in checks])


@bp.route("/spot-checks/<int:check_id>", methods=["POST"])
@access(Role.MANAGER)
@doc("判定一条抽查: genuine 真实 / fake 虚假 (虚假跟进不再计入真实触达)", body=MARK_BODY, scope="write")
def spot_checks_mark(check_id: int):
    """Mark a sampled follow-up genuine or fake (a verdict can be changed)."""
    body = json_body()
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(422, "invalid", "note 必须是字符串。", fields={"note": ["invalid"]})
    try:
        check = spotcheck.mark(
            db.session, current_user, check_id, str(body.get("verdict", "")), clock.now(), note
        )
    except spotcheck.SpotCheckError as exc:
        db.session.rollback()
        raise ApiError(404 if exc.code == "not_found" else 422, exc.code or "invalid", str(exc)) from exc
    db.session.commit()
    return jsonify(check_json(check))


@bp.route("/notifications", methods=["GET"])
@access(Role.REP)
@doc("站内通知 (最新 100 条) 与未读数", scope="read")
def notifications_list():
    """My in-app notifications, newest first, each with ``read``; ``unread`` counts those of open reminders."""
    rows = dispatch.in_app_notifications(db.session, current_user)
    items = [
        {
            "id": d.id,
            "reminder_id": r.id,
            "kind": r.kind,
            "title": r.title,
            "body": r.body,
            "customer_id": r.customer_id,
            "customer_name": name,
            "created_at": d.created_at,
            "read": d.read_at is not None,
        }  # fmt: skip
        for d, r, name in rows
    ]
    return jsonify(notifications=jsonable(items), unread=dispatch.unread_count(db.session, current_user))


@bp.route("/notifications/read", methods=["POST"])
@access(Role.REP)
@doc("标记已读 (ids 省略则全部已读;只影响自己的通知)", body=READ_BODY, scope="write")
def notifications_read():
    """Mark some or all of my in-app notifications read."""
    body = json_body() if request.data else {}
    ids = body.get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise ApiError(422, "invalid", "ids 必须是整数数组。", fields={"ids": ["invalid"]})
    changed = dispatch.mark_read(db.session, current_user, clock.now(), ids)
    db.session.commit()
    return jsonify(marked=changed, unread=dispatch.unread_count(db.session, current_user))
