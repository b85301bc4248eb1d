"""``POST /api/v1/leads`` and ``POST /api/v1/events``: lead intake and scoring behaviour events.

Both need a token with the ``leads`` scope (or ``write`` / ``admin``, which imply it); a leads-only token
can feed leads and events but cannot read customers.
"""

from __future__ import annotations

from flask import g, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm import clock
from crm.access import access
from crm.api.core import ApiError, bp, doc, form_from_json, json_body, leads_only_token
from crm.dbutil import insert_ignore
from crm.extensions import db
from crm.intake import normalize
from crm.intake.forms import ApiLeadForm, EventForm
from crm.intake.services import IntakeError, LeadData, check_utm, intake, lead_pool, prepare
from crm.models import BehaviorEvent, Customer, Pool, Role
from crm.permissions import visible_pool_ids
from crm.scoring import events
from crm.scoring import services as scoring


def _fields(errors) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for error in errors:
        out.setdefault(error.field, []).append(str(error.message))
    return out


@bp.route("/leads", methods=["POST"])
@access(Role.REP)
@doc(
    "提交一条线索 (查重、评分、按评分分配)",
    body=ApiLeadForm,
    scope="leads",
    responses={
        201: "新建线索: {id, status: created, score, grade, pool_id, owner_id, possible_duplicates, "
        "duplicate_check}; 不会自动分配的线索在后台查相似公司 (duplicate_check: queued, possible_duplicates: null, "
        "结果进入冲突队列)",
        200: "重复线索,已归入现有客户: {id, status: duplicate, matched_on, score, grade}; 无法识别的邮箱/微信"
        "(另有可用电话时) 留空并在 warnings 中说明",
    },  # fmt: skip
)
def post_lead():
    """Take a lead in. A duplicate (same phone, email or WeChat as a customer or contact) is attached to
    the existing customer — answered 200 with its id; otherwise 201 with the new lead's id. ``utm`` may be
    an object of ``utm_*`` keys. Needs a name (company or contact) and a phone, email or WeChat.

    A JSON **array** of up to ``BATCH_MAX`` leads is taken in one transaction (for data pipelines): the
    answer is 200 with ``results`` in the same order, each ``{status: created|duplicate|invalid, id, …}``
    (invalid ones carry ``fields``); the valid ones are imported even if some are invalid.
    """
    if request.is_json and isinstance(request.get_json(silent=True), list):
        return _post_leads(request.get_json(silent=True))
    payload = json_body()
    now = clock.now()
    pool, data, p = _read_lead(payload, now)
    if p.errors:
        raise ApiError(422, "invalid", str(p.errors[0].message), fields=_fields(p.errors))
    try:
        (outcome,) = intake(
            db.session, [data], source="api", now=now, pool=pool, actor=current_user, prepared=[p],
            defer_fuzzy=True,
        )  # fmt: skip
    except IntakeError as exc:
        raise ApiError(422, exc.code, exc.message) from exc
    body = _outcome_json(outcome)
    return jsonify(body), 200 if outcome.status == "duplicate" else 201


BATCH_MAX = 1000


def _read_lead(payload: dict, now):
    """(pool or None, LeadData, Prepared) of one JSON lead; raises ApiError for malformed fields."""
    payload = dict(payload)
    try:
        utm = check_utm(payload.pop("utm", None))
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc), fields={"utm": [str(exc)]}) from exc
    form = form_from_json(ApiLeadForm, payload)
    pool = None
    if form.pool_id.data:
        pool = db.session.get(Pool, form.pool_id.data)
        if pool is None or pool.deleted_at is not None:
            raise ApiError(404, "pool_not_found", _("公海池不存在。"))
        if (
            pool.id not in visible_pool_ids(db.session, current_user)
            and pool.id != lead_pool(db.session, now).id
        ):
            raise ApiError(403, "forbidden", _("你不能向「%(pool)s」提交线索。", pool=pool.name))
    values = form.lead_dict() | {k: getattr(form, k).data for k in
                                 ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")}  # fmt: skip
    values["utm"] = utm
    values["arrived_at"] = form.arrived_at.utc if form.arrived_at.data else None
    data = LeadData.from_dict(values)
    return pool, data, prepare(data)


def _outcome_json(outcome) -> dict:
    if leads_only_token():
        # A leads-only token learns whether its lead was taken, not who owns which customer: no owner,
        # pool or other customers' ids; a duplicate is not even given the existing customer's id.
        lean = {"status": outcome.status} if outcome.status == "duplicate" else {
            "id": outcome.customer_id, "status": outcome.status}  # fmt: skip
        if outcome.warnings:  # about the lead's own fields
            lean["warnings"] = _fields(outcome.warnings)
        return lean
    body = {
        "id": outcome.customer_id,
        "status": outcome.status,
        "score": outcome.score,
        "grade": outcome.grade,
        "pool_id": outcome.pool_id,
        "owner_id": outcome.owner_id,
    }
    if outcome.warnings:
        # Flagged fields of a lead taken in anyway (an unusable email beside a good phone): left empty.
        body["warnings"] = _fields(outcome.warnings)
    if outcome.status == "duplicate":
        body["matched_on"] = outcome.matched_on
    elif outcome.duplicate_check == "queued":
        # Not routable anyway, so the similar-name check runs in the background (the conflict queue).
        body["possible_duplicates"] = None
        body["duplicate_check"] = "queued"
    else:
        body["possible_duplicates"] = [{"id": cid, "similarity": score} for cid, score in outcome.conflicts]
        body["duplicate_check"] = "done"
    return body


def _post_leads(items: list):
    """A batch of leads (see ``post_lead``): one intake call per target pool, in order."""
    if not items:
        raise ApiError(422, "invalid", _("数组中没有线索。"))
    if len(items) > BATCH_MAX:
        raise ApiError(422, "too_many", _("一次最多提交 %(n)s 条线索。", n=BATCH_MAX))
    now = clock.now()
    results: list[dict | None] = [None] * len(items)
    groups: dict[int | None, list[tuple[int, object, object]]] = {}
    pools: dict[int | None, object] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results[index] = {
                "status": "invalid",
                "error": "malformed_json",
                "message": _("每条线索必须是 JSON 对象。"),
            }
            continue
        try:
            pool, data, p = _read_lead(item, now)
        except ApiError as exc:
            results[index] = {"status": "invalid", "error": exc.code, "message": exc.message, **exc.extra}
            continue
        if p.errors:
            results[index] = {"status": "invalid", "error": "invalid", "message": str(p.errors[0].message),
                              "fields": _fields(p.errors)}  # fmt: skip
            continue
        key = pool.id if pool is not None else None
        pools[key] = pool
        groups.setdefault(key, []).append((index, data, p))
    for key, group in groups.items():
        try:
            outcomes = intake(db.session, [d for _i, d, _p in group], source="api", now=now, pool=pools[key],
                              actor=current_user, prepared=[p for _i, _d, p in group], defer_fuzzy=True)  # fmt: skip
        except IntakeError as exc:
            raise ApiError(422, exc.code, exc.message) from exc
        for (index, _d, _p), outcome in zip(group, outcomes, strict=True):
            results[index] = _outcome_json(outcome)
    return jsonify(results=results), 200


def _event_customer(form: EventForm) -> Customer:
    customer = None
    if form.customer_id.data:
        customer = db.session.get(Customer, form.customer_id.data)
    elif form.phone.data or form.email.data:
        phone = normalize.phone_key(form.phone.data) if form.phone.data else None
        email = normalize.email_key(form.email.data) if form.email.data else None
        if form.phone.data and phone is None:
            raise ApiError(
                422, "invalid", _("不是有效的电话号码。"), fields={"phone": [_("不是有效的电话号码。")]}
            )
        query = select(Customer).where(Customer.merged_into_id.is_(None))
        if phone:
            customer = db.session.scalar(
                query.where(Customer.phone_key == phone).order_by(Customer.id).limit(1)
            )
        if customer is None and email:
            customer = db.session.scalar(
                query.where(Customer.email_key == email).order_by(Customer.id).limit(1)
            )
    else:
        raise ApiError(422, "invalid", _("请提供 customer_id,或用 phone / email 指明客户。"))
    # A merged customer's events belong to the customer it was merged into.
    while customer is not None and customer.merged_into_id is not None:
        customer = db.session.get(Customer, customer.merged_into_id)
    if customer is None:
        raise ApiError(404, "customer_not_found", _("找不到该客户。"))
    return customer


@bp.route("/events", methods=["POST"])
@access(Role.REP)
@doc(
    "记录一条行为事件 (邮件打开/广告点击/下载/表单提交/页面浏览),并重新评分",
    body=EventForm,
    scope="leads",
    responses={201: "已记录: {id, customer_id, score, grade}", 200: "external_id 重复,未重复记录"},
)
def post_event():
    """Record a behaviour event for a customer (by id, or by phone / email key) and rescore it. The same
    ``external_id`` twice is recorded once (answered 200 with ``duplicate: true``)."""
    form = form_from_json(EventForm, json_body())
    now = clock.now()
    at = form.at.utc if form.at.data else now
    if at > now:
        raise ApiError(
            422, "invalid", _("事件时间不能晚于现在。"), fields={"at": [_("事件时间不能晚于现在。")]}
        )
    customer = _event_customer(form)
    try:
        recent = events.check_event_allowed(
            db.session, g.get("api_token"), current_user, customer, form.type.data, at, now
        )
    except events.EventRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    if recent is not None:
        return jsonify(id=recent.id, customer_id=customer.id, duplicate=True), 200
    data = {"url": form.url.data} if form.url.data else {}
    external_id = (form.external_id.data or "").strip() or None
    stmt = (
        insert_ignore(db.session, BehaviorEvent.__table__, ["external_id"])
        .values(customer_id=customer.id, type=form.type.data, at=at, data=data, external_id=external_id)
        .returning(BehaviorEvent.__table__.c.id)
    )
    event_id = db.session.execute(stmt).scalar()
    if event_id is None:
        db.session.rollback()
        existing = db.session.scalar(select(BehaviorEvent).where(BehaviorEvent.external_id == external_id))
        return jsonify(id=existing.id, customer_id=existing.customer_id, duplicate=True), 200
    result = scoring.recompute(db.session, [customer.id], now).get(customer.id)
    db.session.commit()
    return jsonify(
        id=event_id,
        customer_id=customer.id,
        score=result.score if result else customer.score,
        grade=result.grade if result else customer.grade,
    ), 201
