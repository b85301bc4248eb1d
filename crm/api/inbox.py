"""``GET /api/v1/inbox``: the workbench sections (今日待联系, 逾期未跟进, 高意向未推进, 即将回收) with counts."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from crm import clock
from crm.access import access
from crm.api.core import bp, doc, jsonable
from crm.extensions import db
from crm.inbox import services
from crm.models import Role
from crm.reminders.dispatch import unread_count


def _item(item: services.Item) -> dict:
    return {
        "reminder_id": item.id,
        "kind": item.kind,
        "title": item.title,
        "body": item.body,
        "due_at": item.due_at,
        "escalated_at": item.escalated_at,
        "customer": {
            "id": item.customer_id,
            "name": item.customer_name,
            "grade": item.grade,
            "phone": item.phone,
            "is_hot": item.is_hot,
        }
        if item.customer_id
        else None,
    }


@bp.route("/inbox")
@access(Role.REP)
@doc("我的工作台", query={"limit": "每个分区最多返回条数 (默认 20, 最大 200)"})
def inbox():
    """The token user's sections with counts and their first items, counted in the team's local day;
    managers also get ``team_overdue`` (per rep). ``unread_notifications`` is the badge count."""
    limit = min(max(request.args.get("limit", 20, type=int), 1), 200)
    now = clock.now()
    box = services.inbox_for(db.session, current_user, now, limit=limit)
    body = {
        "as_of": now,
        "day": {"start": box.day_start, "end": box.day_end},
        "counts": services.counts(box),
        "sections": {
            key: {
                "label": str(section.label),
                "count": section.count,
                "items": [_item(i) for i in section.items],
            }
            for key, section in box.sections.items()
        },
        "unread_notifications": unread_count(db.session, current_user),
    }
    if box.team_overdue is not None:
        body["team_overdue"] = [
            {
                "user_id": row.user_id,
                "name": row.user_name,
                "count": row.count,
                "items": [_item(i) for i in row.items],
            }
            for row in box.team_overdue
        ]
    return jsonify(jsonable(body))
