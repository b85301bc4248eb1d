"""Recycle API (SPEC §9): pool rules and their preview, 长期培育, protection, 延期申请, holidays, sweep runs.

Rule lists are ``{"rules": [{"kind": "no_followup", "days": 7, "day_kind": "calendar", "grades": ["A"],
"kinds": [], "warn_days": 2, "escalate_days": 1, "target_pool_id": null, "exclude_protected": true,
"exclude_stage_id": null, "enabled": true, "id": 12}], "confirm": 37}`` — missing keys take the defaults
shown in the settings page; ``id`` keeps an existing rule (its ledger history), rules left out are removed.
``GET /pools/<id>/rules/preview`` takes the same body as JSON, or URL-encoded JSON in the ``rules`` query
parameter, or nothing (the saved rules).
"""

from __future__ import annotations

import json
from datetime import date, datetime

from flask import jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from crm import clock
from crm.access import access
from crm.api.core import ApiError, _form_value, bp, doc, form_from_json, get_or_404, json_body, jsonable
from crm.extensions import db
from crm.inputguard import year_arg
from crm.models import Customer, ExtensionRequest, Role
from crm.permissions import can_view_customer
from crm.recycle import calendar, engine, services
from crm.recycle.forms import DecisionForm, ExtensionForm, RulesForm
from crm.recycle.sweep import last_runs

RULE_DEFAULTS = {
    "kind": "no_followup", "day_kind": "calendar", "warn_days": 0, "escalate_days": 0,
    "exclude_protected": True, "enabled": True,
}  # fmt: skip
RULE_KEYS = set(RULE_DEFAULTS) | {
    "id",
    "days",
    "hours",
    "grades",
    "kinds",
    "target_pool_id",
    "exclude_stage_id",
}
RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "rules": {"type": "array", "items": {"type": "object"}, "description": "整份规则列表 (见模块说明)"},
        "confirm": {"type": "integer", "description": "会立即回收的客户数 (409 confirm_required 时给出)"},
    },
}
UNTIL_SCHEMA = {
    "type": "object",
    "required": ["until"],
    "properties": {
        "until": {"type": ["string", "null"], "description": "日期 YYYY-MM-DD 或 ISO 8601 时间; null 取消"}
    },
}


def _raise(exc: services.RecycleError):
    db.session.rollback()
    raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from exc


def _rule_json(rule: engine.RuleDef) -> dict:
    data = rule.as_dict()
    data["label"] = rule.label
    return data


def _pool(pool_id: int):
    try:
        pool = services.live_pool(db.session, pool_id)
        services.check_rules_admin(db.session, current_user, pool)
    except services.RecycleError as exc:
        _raise(exc)
    return pool


def _rules_from_payload(pool, payload: dict) -> tuple[list[engine.RuleDef], int | None]:
    """Validate a rule list with the settings page's form; 422 with per-rule field errors."""
    items = payload.get("rules")
    if not isinstance(items, list):
        raise ApiError(422, "invalid", _("请提供 rules (规则列表)。"))
    data = MultiDict()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(422, "invalid", _("第 %(n)s 条规则不是对象。", n=i + 1))
        unknown = sorted(set(item) - RULE_KEYS - {"label", "position", "pool_id"})
        if unknown:
            raise ApiError(
                422, "invalid", _("第 %(n)s 条规则有未知字段: %(keys)s", n=i + 1, keys=", ".join(unknown))
            )
        for key, value in (RULE_DEFAULTS | item).items():
            if key in ("label", "position", "pool_id"):
                continue
            if isinstance(value, bool) and key not in ("exclude_protected", "enabled"):
                raise ApiError(
                    422, "invalid", _("第 %(n)s 条规则的 %(key)s 不能是布尔值。", n=i + 1, key=key)
                )
            for v in _form_value(value):
                data.add(f"rules-{i}-{key}", v)
    form = RulesForm(formdata=data, meta={"csrf": False})
    from crm.recycle.routes import _choices_for

    _choices_for(form)
    if not form.validate():
        fields = {}
        for i, entry in enumerate(form.rules):
            if entry.form.errors:
                fields[str(i)] = {k: [str(e) for e in v] for k, v in entry.form.errors.items()}
        first = next((errs[0] for f in fields.values() for errs in f.values()), _("规则有误。"))
        if not fields and form.errors:
            first = str(next(iter(form.errors.values()))[0])
        raise ApiError(422, "invalid", first, fields=fields)
    confirm = payload.get("confirm")
    if confirm is not None and (not isinstance(confirm, int) or isinstance(confirm, bool)):
        raise ApiError(422, "invalid", _("confirm 必须是整数。"))
    return form.rule_defs(pool.id), confirm


@bp.route("/pools/<int:pool_id>/rules", methods=["GET"])
@access(Role.MANAGER)
@doc("公海的回收规则列表 (管理员 / 该公海管理员)", scope="read")
def pool_rules_get(pool_id: int):
    """The pool's whole rule list, each with a readable label."""
    pool = _pool(pool_id)
    return jsonify(pool_id=pool.id, rules=[_rule_json(r) for r in services.rule_defs(db.session, pool.id)])


@bp.route("/pools/<int:pool_id>/rules", methods=["PUT"])
@access(Role.MANAGER)
@doc(
    "整体替换公海的回收规则 (409 confirm_required: 会立即回收 count 个客户, 带 confirm=count 重试)",
    body=RULE_SCHEMA,
    scope="write",
)
def pool_rules_put(pool_id: int):
    """Replace the rule list; audited; nothing saved on any error."""
    pool = _pool(pool_id)
    rules, confirm = _rules_from_payload(pool, json_body())
    try:
        saved = services.save_rules(db.session, pool, rules, current_user, clock.now(), confirm=confirm)
    except services.ConfirmRequired as exc:
        db.session.rollback()
        raise ApiError(
            409, exc.code, exc.message, count=exc.count, preview=jsonable(exc.preview.as_json())
        ) from exc
    except services.RecycleError as exc:
        _raise(exc)
    db.session.commit()
    return jsonify(pool_id=pool.id, rules=[_rule_json(engine.RuleDef.from_model(r)) for r in saved])


@bp.route("/pools/<int:pool_id>/rules/preview", methods=["GET"])
@access(Role.MANAGER)
@doc(
    "规则预演: 现在会预警多少、今天与未来 7 天每天回收多少, 附样例 (只读)",
    body=RULE_SCHEMA,
    query={"rules": "URL 编码的 JSON 规则列表 (可代替请求体)", "as_of": "ISO 8601 时间 (默认现在)"},
    scope="read",
)
def pool_rules_preview(pool_id: int):
    """Same body as PUT (JSON body, or ``?rules=`` JSON), or the saved rules when neither is given."""
    pool = _pool(pool_id)
    payload = None
    if request.data:
        payload = json_body()
    elif request.args.get("rules"):
        try:
            parsed = json.loads(request.args["rules"])
        except ValueError as exc:
            raise ApiError(400, "malformed_json", _("rules 参数不是有效的 JSON。")) from exc
        payload = {"rules": parsed} if isinstance(parsed, list) else parsed
        if not isinstance(payload, dict):
            raise ApiError(400, "malformed_json", _("rules 参数不是有效的 JSON。"))
    now = clock.now()
    if request.args.get("as_of"):
        try:
            now = clock.parse_iso(request.args["as_of"])
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from exc
    if payload is None:
        rules = engine.active_rules(db.session, pool.id)
    else:
        rules, _confirm = _rules_from_payload(pool, payload)
    result = engine.preview(db.session, pool.id, rules, now)
    db.session.rollback()
    return jsonify(
        jsonable({"pool_id": pool.id, "rules": [_rule_json(r) for r in rules], **result.as_json()})
    )


# ---------------------------------------------------------------- customers


def _visible_customer(customer_id: int) -> Customer:
    customer = get_or_404(Customer, customer_id, _("客户不存在。"))
    if customer.merged_into_id is not None:
        raise ApiError(404, "not_found", _("客户不存在。"))
    if not can_view_customer(db.session, current_user, customer):
        raise ApiError(403, "forbidden", _("你不能查看该客户。"))
    return customer


def _until(payload: dict, end_of_day: bool) -> datetime | None:
    if "until" not in payload:
        raise ApiError(
            422, "invalid", _("请提供 until (日期或时间; null 表示取消)。"), fields={"until": ["required"]}
        )
    raw = payload["until"]
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ApiError(422, "invalid", _("until 必须是日期或 ISO 8601 时间。"), fields={"until": ["invalid"]})
    try:
        if len(raw.strip()) == 10:
            day = date.fromisoformat(raw.strip())
            return clock.day_bounds(day)[1] if end_of_day else clock.at_local(day, 0, 0)
        return clock.parse_iso(raw)
    except ValueError as exc:
        raise ApiError(
            422, "invalid", _("until 不是有效的日期或时间: %(v)s", v=raw), fields={"until": ["invalid"]}
        ) from exc


@bp.route("/customers/<int:customer_id>/recycle", methods=["GET"])
@access(Role.REP)
@doc("客户的下次回收时间、规则与原因 (同 GET /customers/<id> 的 recycle 字段)", scope="read")
def customer_recycle(customer_id: int):
    """The ``recycle`` key of the customer JSON, on its own."""
    customer = _visible_customer(customer_id)
    return jsonify(jsonable(engine.due_info(db.session, customer, clock.now()).as_json()))


@bp.route("/customers/<int:customer_id>/nurture", methods=["POST"])
@access(Role.REP)
@doc("长期培育到某天 (当天回收, 除非期间有跟进); until=null 取消", body=UNTIL_SCHEMA, scope="write")
def customer_nurture(customer_id: int):
    """Owner or their manager; capped by the pool's nurture_max_days."""
    _visible_customer(customer_id)
    until = _until(json_body(), end_of_day=False)
    try:
        customer = services.set_nurture(db.session, customer_id, current_user, until, clock.now())
    except services.RecycleError as exc:
        _raise(exc)
    db.session.commit()
    return jsonify(jsonable({"customer_id": customer.id, "nurture_until": customer.nurture_until,
                             "recycle": engine.due_info(db.session, customer, clock.now()).as_json()}))  # fmt: skip


@bp.route("/customers/<int:customer_id>/protect", methods=["POST"])
@access(Role.MANAGER)
@doc("保护到某天 (含当天, 期间不回收); until=null 取消 (主管)", body=UNTIL_SCHEMA, scope="write")
def customer_protect(customer_id: int):
    """The owner's manager or an admin."""
    _visible_customer(customer_id)
    until = _until(json_body(), end_of_day=True)
    try:
        customer = services.set_protection(db.session, customer_id, current_user, until, clock.now())
    except services.RecycleError as exc:
        _raise(exc)
    db.session.commit()
    return jsonify(jsonable({"customer_id": customer.id, "protected_until": customer.protected_until}))


def _request_json(req: ExtensionRequest) -> dict:
    return jsonable(
        {
            "id": req.id,
            "customer_id": req.customer_id,
            "requester_id": req.requester_id,
            "days": req.days,
            "reason": req.reason,
            "status": req.status,
            "holding_no": req.holding_no,
            "decided_by_id": req.decided_by_id,
            "decided_at": req.decided_at,
            "decision_note": req.decision_note,
            "created_at": req.created_at,
        }  # fmt: skip
    )


@bp.route("/customers/<int:customer_id>/extension-requests", methods=["POST"])
@access(Role.REP)
@doc("延期申请: 负责人申请延长 days 天 (需理由)", body=ExtensionForm, scope="write")
def customer_extension_request(customer_id: int):
    """The owner asks; their manager is notified."""
    _visible_customer(customer_id)
    form = form_from_json(ExtensionForm, json_body())
    try:
        req = services.request_extension(
            db.session, customer_id, current_user, form.days.data, form.reason.data, clock.now()
        )
    except services.RecycleError as exc:
        _raise(exc)
    db.session.commit()
    return jsonify(_request_json(req)), 201


@bp.route("/extension-requests", methods=["GET"])
@access(Role.MANAGER)
@doc("待我审批的延期申请", scope="read")
def extension_requests_list():
    """Pending requests the caller may decide."""
    return jsonify(requests=[_request_json(r) for r in services.pending_requests(db.session, current_user)])


def _decide(request_id: int, approve: bool):
    payload = json_body() if request.data else {}
    form = form_from_json(DecisionForm, payload)
    try:
        req = services.decide_extension(
            db.session, request_id, current_user, approve, clock.now(), form.note.data
        )
    except services.RecycleError as exc:
        _raise(exc)
    db.session.commit()
    return jsonify(_request_json(req))


@bp.route("/extension-requests/<int:request_id>/approve", methods=["POST"])
@access(Role.MANAGER)
@doc("批准延期 (申请人的主管或管理员)", body=DecisionForm, scope="write")
def extension_approve(request_id: int):
    """Approval moves the due time by the requested days."""
    return _decide(request_id, True)


@bp.route("/extension-requests/<int:request_id>/reject", methods=["POST"])
@access(Role.MANAGER)
@doc("驳回延期", body=DecisionForm, scope="write")
def extension_reject(request_id: int):
    """Rejection is ledgered and the requester is notified."""
    return _decide(request_id, False)


# ---------------------------------------------------------------- holidays and runs


def _holidays_json(rows) -> list[dict]:
    return [{"date": h.day.isoformat(), "is_workday": h.is_workday, "name": h.name} for h in rows]


@bp.route("/settings/holidays", methods=["GET"])
@access(Role.ADMIN)
@doc("节假日日历 (含调休上班日)", query={"year": "只看某一年"}, scope="admin")
def holidays_get():
    """The calendar working days are counted with."""
    return jsonify(holidays=_holidays_json(calendar.list_holidays(db.session, year_arg())))


@bp.route("/settings/holidays", methods=["PUT"])
@access(Role.ADMIN)
@doc(
    "整体替换节假日日历: [{date, is_workday, name}] (任一日期无效则 422, 什么都不保存)",
    body={"type": "object", "properties": {"holidays": {"type": "array", "items": {"type": "object"}}}},
    scope="admin",
)
def holidays_put():
    """Accepts ``{"holidays": [...]}`` or a bare list."""
    payload = request.get_json(silent=True) if request.is_json else None
    if payload is None:
        json_body()
    entries = payload.get("holidays") if isinstance(payload, dict) else payload
    try:
        rows = calendar.replace_holidays(db.session, entries, current_user, clock.now())
    except calendar.HolidayError as exc:
        db.session.rollback()
        raise ApiError(
            422, "invalid", exc.errors[0][1], errors=[{"index": i, "message": m} for i, m in exc.errors]
        ) from exc
    db.session.commit()
    return jsonify(holidays=_holidays_json(rows))


@bp.route("/sweep-runs", methods=["GET"])
@access(Role.ADMIN)
@doc("最近的回收运行记录", scope="admin")
def sweep_runs():
    """When each sweep ran, as of which instant, how long, what it did, errors."""
    rows = last_runs(db.session, max(1, min(request.args.get("limit", 50, type=int), 500)))
    return jsonify(
        runs=[
            jsonable(
                {
                    "id": r.id,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "as_of": r.as_of,
                    "duration_ms": r.duration_ms,
                    "dry_run": r.dry_run,
                    "status": r.status,
                    "recycled": r.recycled,
                    "warned": r.warned,
                    "escalated": r.escalated,
                    "error": r.error,
                    "details": r.details,
                }
            )  # fmt: skip
            for r in rows
        ]
    )
