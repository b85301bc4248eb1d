"""Stage settings (admins): rename, reorder, set the requirement, funnel bucket and kind, deactivate.

Rules that keep the pipeline coherent (decisions where the SPEC is silent):
- names are unique; a won-kind stage must require a contract and a lost-kind stage a lost reason, so a deal
  always has its contract and a loss its reason;
- at least one active open stage remains (new opportunities start there);
- a stage that still holds open opportunities cannot be deactivated (move them first) — otherwise cards
  would vanish from the kanban.
Every save is audited (``SettingsAudit``, section ``stages``).
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import Opportunity, Stage, StageKind, StageRequirement, User
from crm.pipeline.services import FUNNEL_BUCKETS, StageError
from crm.settings import store

KIND_NEEDS = {StageKind.WON: StageRequirement.CONTRACT, StageKind.LOST: StageRequirement.LOST_REASON}


def _snapshot(stage: Stage | None) -> dict | None:
    if stage is None:
        return None
    return {"name": stage.name, "position": stage.position, "kind": stage.kind, "requirement": stage.requirement,
            "funnel": stage.funnel, "active": stage.active}  # fmt: skip


def save_stage(session: Session, stage: Stage | None, data: dict, user: User, now: datetime) -> Stage:
    """Create (``stage`` None) or update a stage from ``data`` (name, position, kind, requirement, funnel,
    active). Raises ``StageError`` naming the field; does not commit."""
    name = (data.get("name") or "").strip()
    if not name:
        raise StageError("invalid", _("请填写阶段名称。"), "name")
    if len(name) > 30:
        raise StageError("invalid", _("阶段名称不超过 30 字。"), "name")
    clash = session.scalar(select(Stage.id).where(Stage.name == name))
    if clash is not None and (stage is None or clash != stage.id):
        raise StageError("invalid", _("已有名为「%(name)s」的阶段。", name=name), "name")
    kind, requirement, funnel = data.get("kind"), data.get("requirement"), data.get("funnel")
    if kind not in (StageKind.OPEN, StageKind.WON, StageKind.LOST):
        raise StageError("invalid", _("请选择类型。"), "kind")
    if requirement not in StageRequirement.ALL:
        raise StageError("invalid", _("请选择进入要求。"), "requirement")
    if funnel not in FUNNEL_BUCKETS:
        raise StageError("invalid", _("请选择漏斗分组。"), "funnel")
    if kind in KIND_NEEDS and requirement != KIND_NEEDS[kind]:
        message = (_("成交类阶段必须要求合同与开票信息。") if kind == StageKind.WON
                   else _("输单类阶段必须要求输单原因。"))  # fmt: skip
        raise StageError("invalid", message, "requirement")
    if kind == StageKind.OPEN and requirement in KIND_NEEDS.values():
        raise StageError("invalid", _("进行中的阶段不能要求合同或输单原因。"), "requirement")
    try:
        position = int(data.get("position"))
    except (TypeError, ValueError):
        raise StageError("invalid", _("请填写顺序。"), "position") from None
    if not 1 <= position <= 999:
        raise StageError("invalid", _("顺序需在 1–999 之间。"), "position")
    active = bool(data.get("active"))
    if stage is not None and (not active or kind != StageKind.OPEN):
        held = session.scalar(
            select(func.count()).where(Opportunity.stage_id == stage.id, Opportunity.status == "open")
        )
        if held:
            raise StageError(
                "invalid", _("该阶段还有 %(n)s 个进行中的商机,请先把它们移到其他阶段。", n=held), "active"
            )
    others_open = session.scalar(
        select(func.count()).where(
            Stage.active.is_(True), Stage.kind == StageKind.OPEN, Stage.id != (stage.id if stage else -1)
        )
    )
    if not others_open and not (active and kind == StageKind.OPEN):
        raise StageError("invalid", _("至少保留一个启用的进行中阶段。"), "active")
    before = _snapshot(stage)
    if stage is None:
        stage = Stage(
            name=name, position=position, kind=kind, requirement=requirement, funnel=funnel, active=active
        )
        session.add(stage)
    else:
        stage.name, stage.position, stage.kind = name, position, kind
        stage.requirement, stage.funnel, stage.active = requirement, funnel, active
    session.flush()
    store.audit(session, "stages", user, now, before, _snapshot(stage),
                _("修改了销售阶段「%(name)s」", name=name), object_id=stage.id)  # fmt: skip
    return stage
