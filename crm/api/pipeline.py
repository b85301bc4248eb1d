"""Pipeline over the API (SPEC §7, §9): ``GET /stages``, ``POST /customers/<id>/stage``,
``GET/POST /customers/<id>/opportunities``, ``PATCH /opportunities/<id>``, ``POST /opportunities/<id>/stage``,
``POST /customers/<id>/convert`` (一转三). The same service functions and permission checks as the web UI.

Stage-change bodies: ``{"stage": id or name, ...what the stage requires}`` — quote: ``items``
(``[{"name", "qty", "price"}]``), ``amount`` (optional, defaults to the items' total), ``valid_until``;
follow-up: ``channel``, ``content``, ``goal_met``, ``next_plan``, ``next_contact_at`` (ISO 8601);
contract: ``contract_number``, ``amount``, ``signed_on``, ``invoice_title``, ``tax_id``, ``note``;
lost: ``lost_reason`` (one of ``GET /settings/pipeline`` → ``lost_reasons``). Refusals: 422 requirement /
invalid (missing or bad input, ``fields`` names it), 403 forbidden, 404 not_found, 409 conflict
(duplicate contract number).
"""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user

from crm import clock, hooks
from crm.access import access
from crm.api.core import ApiError, bp, doc, form_from_json, json_body, jsonable
from crm.extensions import db
from crm.models import Customer, Opportunity, Role, Stage, StageChange, User
from crm.permissions import can_view_customer, can_work_pipeline
from crm.pipeline import services
from crm.pipeline.forms import ConvertForm, OpportunityForm

STAGE_BODY = {
    "type": "object",
    "required": ["stage"],
    "properties": {
        "stage": {"description": "目标阶段 id 或名称"},
        "opportunity_id": {"type": "integer", "description": "客户有多个进行中的商机时指明推进哪一个"},
        "items": {
            "type": "array",
            "description": "报价明细(已报价)",
            "items": {
                "type": "object",
                "required": ["name", "qty", "price"],
                "properties": {
                    "name": {"type": "string", "maxLength": 120},
                    "qty": {"type": "number", "exclusiveMinimum": 0},
                    "price": {"type": "number", "minimum": 0},
                },
            },
        },
        "amount": {"type": "number", "exclusiveMinimum": 0, "description": "报价金额 / 合同金额"},
        "valid_until": {"type": "string", "format": "date", "description": "报价有效期(不早于今天)"},
        "channel": {"type": "string", "description": "跟进方式(跟进类阶段)"},
        "content": {"type": "string", "description": "沟通内容"},
        "goal_met": {"type": "boolean"},
        "next_plan": {"type": "string", "description": "下次计划"},
        "next_contact_at": {"type": "string", "format": "date-time", "description": "下次联系时间"},
        "contract_number": {"type": "string", "maxLength": 60, "description": "合同编号(唯一,成交)"},
        "signed_on": {"type": "string", "format": "date", "description": "签约日期"},
        "invoice_title": {"type": "string", "maxLength": 120, "description": "开票抬头"},
        "tax_id": {"type": "string", "description": "税号 / 统一社会信用代码,15–20 位字母或数字"},
        "note": {"type": "string"},
        "lost_reason": {"type": "string", "description": "输单原因(设置中的列表之一)"},
    },
}
STAGE_RESPONSES = {
    200: "已进入目标阶段:stage_change 与商机",
    403: "forbidden: 只有负责人、其主管或管理员可以推进",
    404: "not_found",
    409: "conflict: 合同编号已存在",
    422: "requirement: 缺少目标阶段要求的内容 (fields 指出字段) / invalid",
}


def _me() -> User:
    return current_user._get_current_object()


def _error(exc: services.StageError) -> ApiError:
    fields = {exc.field: [exc.message]} if exc.field else {}
    return ApiError(exc.status, exc.code, exc.message, fields=fields)


def _customer(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None or customer.merged_into_id is not None:
        raise ApiError(404, "not_found", _("客户不存在。"))
    if not can_view_customer(db.session, _me(), customer):
        raise ApiError(403, "forbidden", _("这个客户不归你负责,也不在你可见的公海中。"))
    return customer


def _work_customer(customer_id: int) -> Customer:
    """A customer the caller may work the pipeline of, checked before the body is read (403 before 422)."""
    customer = _customer(customer_id)
    if not can_work_pipeline(db.session, _me(), customer):
        raise ApiError(403, "forbidden", _("只有客户负责人、其主管或管理员可以操作商机。"))
    return customer


def _opportunity(opportunity_id: int) -> Opportunity:
    opp = db.session.get(Opportunity, opportunity_id)
    if opp is None or not can_view_customer(db.session, _me(), opp.customer):
        raise ApiError(404, "not_found", _("找不到该商机。"))
    return opp


def stage_json(stage: Stage) -> dict:
    return {"id": stage.id, "name": stage.name, "position": stage.position, "kind": stage.kind,
            "requirement": stage.requirement, "funnel": stage.funnel, "active": stage.active}  # fmt: skip


def opportunity_json(opp: Opportunity) -> dict:
    return jsonable(
        {
            "id": opp.id,
            "customer_id": opp.customer_id,
            "name": opp.name,
            "owner": {"id": opp.owner.id, "name": opp.owner.name} if opp.owner else None,
            "stage": {"id": opp.stage.id, "name": opp.stage.name} if opp.stage else None,
            "status": opp.status,
            "amount": opp.amount,
            "expected_close": opp.expected_close,
            "lost_reason": opp.lost_reason,
            "from_pool": opp.from_pool,
            "stage_changed_at": opp.stage_changed_at,
            "created_at": opp.created_at,
            "closed_at": opp.closed_at,
        }
    )


def change_json(change: StageChange) -> dict:
    return jsonable(
        {
            "id": change.id,
            "customer_id": change.customer_id,
            "opportunity_id": change.opportunity_id,
            "from_stage": change.from_stage.name if change.from_stage else None,
            "to_stage": change.to_stage.name if change.to_stage else None,
            "at": change.at,
            "note": change.note,
        }
    )


def _move(target, payload: dict):
    try:
        change = services.change_stage(db.session, target, payload.get("stage"), _me(), clock.now(), payload)
    except services.StageError as exc:
        db.session.rollback()
        raise _error(exc) from exc
    db.session.commit()
    customer = db.session.get(Customer, change.customer_id)
    return jsonify(
        stage_change=change_json(change),
        customer={"id": customer.id, "stage": customer.stage.name if customer.stage else None,
                  "last_stage_change_at": jsonable(customer.last_stage_change_at),
                  "won_at": jsonable(customer.won_at), "lifecycle": customer.lifecycle},
        opportunity=opportunity_json(change.opportunity) if change.opportunity else None,
    )  # fmt: skip


@bp.route("/stages", methods=["GET"])
@access(Role.REP)
@doc("销售阶段(启用的,按顺序)及进入要求;以及输单原因列表")
def stages_list():
    """Active stages in order with what entering each requires, and the configured lost reasons."""
    return jsonify(
        stages=[stage_json(s) for s in services.active_stages(db.session)],
        lost_reasons=services.lost_reasons(db.session),
    )


@bp.route("/customers/<int:customer_id>/stage", methods=["POST"])
@access(Role.REP)
@doc("推进客户阶段(阶段即动作:按目标阶段的要求提交报价/跟进/合同/输单原因)", body=STAGE_BODY, scope="write",
     responses=STAGE_RESPONSES)  # fmt: skip
def customer_stage(customer_id: int):
    """Move the customer's open opportunity (or the customer itself when it has none) into ``stage``."""
    return _move(_customer(customer_id), json_body())


@bp.route("/opportunities/<int:opportunity_id>/stage", methods=["POST"])
@access(Role.REP)
@doc("推进商机阶段", body=STAGE_BODY, scope="write", responses=STAGE_RESPONSES)
def opportunity_stage(opportunity_id: int):
    """Move one opportunity into ``stage`` with what the stage requires."""
    return _move(_opportunity(opportunity_id), json_body())


@bp.route("/customers/<int:customer_id>/opportunities", methods=["GET"])
@access(Role.REP)
@doc("客户的商机(进行中的在前)")
def customer_opportunities(customer_id: int):
    """The customer's opportunities, open ones first."""
    customer = _customer(customer_id)
    return jsonify(
        opportunities=[opportunity_json(o) for o in services.customer_opportunities(db.session, customer.id)]
    )


@bp.route("/customers/<int:customer_id>/opportunities", methods=["POST"])
@access(Role.REP)
@doc(
    "新建商机",
    body=OpportunityForm,
    scope="write",
    responses={201: "已创建", 403: "forbidden", 422: "invalid"},
)
def create_opportunity(customer_id: int):
    """A new opportunity; it starts at the customer's current open stage (else the first open stage)."""
    customer = _work_customer(customer_id)
    form = form_from_json(OpportunityForm, json_body())
    try:
        opp = services.create_opportunity(db.session, customer, _me(), clock.now(), form.input())
    except services.StageError as exc:
        db.session.rollback()
        raise _error(exc) from exc
    db.session.commit()
    return jsonify(opportunity_json(opp)), 201


@bp.route("/opportunities/<int:opportunity_id>", methods=["GET"])
@access(Role.REP)
@doc("一个商机")
def get_opportunity(opportunity_id: int):
    """One opportunity."""
    return jsonify(opportunity_json(_opportunity(opportunity_id)))


@bp.route("/opportunities/<int:opportunity_id>", methods=["PATCH"])
@access(Role.REP)
@doc("修改商机名称、预计金额、预计成交日期(阶段请用 /stage)", body=OpportunityForm, scope="write")
def update_opportunity(opportunity_id: int):
    """Edit an opportunity's name, amount or expected close (the whole form: send every field)."""
    opp = _opportunity(opportunity_id)
    form = form_from_json(OpportunityForm, json_body())
    try:
        services.update_opportunity(db.session, opp, _me(), clock.now(), form.input())
    except services.StageError as exc:
        db.session.rollback()
        raise _error(exc) from exc
    db.session.commit()
    return jsonify(opportunity_json(opp))


@bp.route("/customers/<int:customer_id>/convert", methods=["POST"])
@access(Role.REP)
@doc("一转三:线索转化为客户 + 主要联系人 + 商机(同一事务)", body=ConvertForm, scope="write",
     responses={201: "已转化", 403: "forbidden", 422: "invalid: 已转化 / 未领取 / 缺联系人"})  # fmt: skip
def convert(customer_id: int):
    """Convert an owned lead: the customer becomes an account, its contact the primary contact, and an
    opportunity opens — all or nothing."""
    customer = _work_customer(customer_id)
    form = form_from_json(ConvertForm, json_body())
    data = services.ConversionInput(form.opportunity_name.data, form.amount.data, form.expected_close.data,
                                    form.contact_name.data)  # fmt: skip
    try:
        result = services.convert_lead(db.session, customer, _me(), clock.now(), data)
    except services.StageError as exc:
        db.session.rollback()
        raise _error(exc) from exc
    db.session.commit()
    return jsonify(
        customer={"id": customer.id, "lifecycle": customer.lifecycle, "name": customer.name},
        contact={
            "id": result.contact.id,
            "name": result.contact.name,
            "is_primary": result.contact.is_primary,
        },
        opportunity=opportunity_json(result.opportunity),
    ), 201


def _customer_extra(session, customer: Customer, user) -> dict:
    """``GET /customers/<id>`` gains ``opportunities`` (open ones first)."""
    return {
        "opportunities": [opportunity_json(o) for o in services.customer_opportunities(session, customer.id)]
    }


hooks.register_customer_json(_customer_extra)
