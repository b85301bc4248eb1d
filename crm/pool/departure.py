"""离职/休假交接 of many customers as a background task (crm/tasks): a departing rep's 3,000 customers
move in chunks, each chunk one transaction through ``services.move_all_customers`` (the same rules and
ledger as the one-click handover). A retry after a killed worker moves what is left: a moved customer is
no longer the departing rep's, so nothing moves twice."""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy.orm import Session

from crm import clock
from crm.models import Task, User
from crm.pool import services

CHUNK = 500


def start(
    session: Session,
    from_user: User,
    actor: User,
    now: datetime,
    *,
    to_user: User | None,
    reason: str | None,
    override_cap: bool,
    fallback_pool_id: int | None,
    deactivate: bool,
) -> Task:
    """Check what can be checked at once (who may hand over, the receiver's cap for all of them), then
    start the task. Raises ``PoolRefusal``."""
    from crm.tasks import services as tasks

    if not services.manages(session, actor, from_user) or actor.id == from_user.id:
        raise services.PoolRefusal(
            "forbidden", _("只有管理员或其主管可以移交 %(name)s 的客户。", name=from_user.name)
        )
    held = services.held_count(session, from_user.id)
    if to_user is not None:
        if to_user.id == from_user.id:
            raise services.PoolRefusal("invalid", _("请选择另一位接收人。"), field="user_id")
        services._check_cap(session, to_user, held, override=override_cap)
    params = {"from_user_id": from_user.id, "to_user_id": to_user.id if to_user else None, "reason": reason,
              "override_cap": override_cap, "fallback_pool_id": fallback_pool_id, "deactivate": deactivate}  # fmt: skip
    return tasks.start(
        session, "handover", actor, now, params=params, total=held, ref=f"handover:{from_user.id}"
    )


def handover_task(session: Session, task: Task, progress) -> dict:
    """Move the departing user's customers ``CHUNK`` at a time; deactivate them at the end if asked."""
    p = task.params
    from_user = session.get(User, p["from_user_id"])
    actor = session.get(User, task.owner_id)
    to_user = session.get(User, p["to_user_id"]) if p.get("to_user_id") else None
    moved = 0
    refused: dict[int, str] = {}
    after = 0
    progress(0, stage="work")
    while True:
        result = services.move_all_customers(
            session, from_user, actor, clock.now(), to_user=to_user, reason=p.get("reason"),
            override_cap=p.get("override_cap", False), fallback_pool_id=p.get("fallback_pool_id"), limit=CHUNK,
            after_id=after,
        )  # fmt: skip
        seen = result.assigned + list(result.refused)
        if not seen:
            break
        after = max(seen)
        moved += len(result.assigned)
        refused.update(result.messages)
        progress(moved + len(refused), errors=len(refused))
    progress(moved + len(refused), errors=len(refused), force=True)
    deactivated = False
    if p.get("deactivate") and from_user.active and actor.is_admin and not refused:
        from crm.admin import services as admin_services

        admin_services.set_active(session, from_user, actor, False, clock.now())
        session.commit()
        deactivated = True
    return {"moved": moved, "refused": len(refused), "reasons": sorted(set(refused.values()))[:3],
            "to": to_user.name if to_user else None, "from": from_user.name, "deactivated": deactivated}  # fmt: skip


def summary(task: Task) -> str:
    r = task.result
    text = (
        _(
            "已把 %(from)s 的 %(n)s 个客户移交给 %(to)s",
            n=r.get("moved", 0),
            to=r["to"],
            **{"from": r.get("from", "")},
        )
        if r.get("to")
        else _("已把 %(from)s 的 %(n)s 个客户退回公海", n=r.get("moved", 0), **{"from": r.get("from", "")})
    )
    if r.get("refused"):
        text += _(",%(n)s 个未处理:%(why)s", n=r["refused"], why=";".join(r.get("reasons") or []))
    if r.get("deactivated"):
        text += _(",已停用该账号")
    return text + "。"
