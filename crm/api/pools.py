"""``/api/v1/pools``: the pools a user may open, pool administration, and a pool's claimable customers.

Refusals of pool actions answer ``{"error": code, "message": …}`` with the status of
``crm.pool.services.PoolRefusal.STATUS`` (409 taken, 429 daily limit, 422 cap / cooldown / priority…).
"""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user
from sqlalchemy import select

from crm import clock
from crm.access import access
from crm.api.core import ApiError, bp, doc, form_from_json, json_body, jsonable
from crm.extensions import db
from crm.models import Customer, Pool, Role, User
from crm.permissions import (
    can_edit_pool,
    is_pool_admin,
    is_pool_member,
    mask_phone,
    mask_text,
    visible_pool_ids,
)
from crm.pool import board as board_q
from crm.pool import manage, services
from crm.pool.forms import PoolForm

BOARD_QUERY = {
    "q": "搜索: 公司名称,或完整电话 (按 E.164 归一化后精确匹配)",
    "region": "区域",
    "industry": "行业",
    "grade": "等级 A/B/C",
    "tag": "标签 id",
    "source": "来源或渠道",
    "new": "1 = 只看今日新进",
    "cursor": "上一页返回的 next_cursor (按 评分, id 的键集分页)",
    "limit": "每页条数 1–100,默认 30",
}


def refusal_error(refusal: services.PoolRefusal) -> ApiError:
    """A ``PoolRefusal`` as the API's JSON error with the refusal's status and details."""
    return ApiError(refusal.status, refusal.code, refusal.message, **jsonable(refusal.detail))


def _me() -> User:
    return current_user._get_current_object()


def _pool(pool_id: int) -> Pool:
    pool = db.session.get(Pool, pool_id)
    if pool is None or pool.deleted_at is not None or pool.id not in visible_pool_ids(db.session, _me()):
        raise ApiError(404, "not_found", "公海不存在或你不是其成员。")
    return pool


def pool_json(pool: Pool, *, counts: dict | None = None, claimed_today: int | None = None) -> dict:
    data = manage.snapshot(pool) | {"id": pool.id, "created_at": pool.created_at}
    if counts is not None:
        data["open_customers"] = counts.get("open", 0)
        data["waiting_customers"] = counts.get("waiting", 0)
        data["open_customers_capped"] = counts.get("capped", False)
    if claimed_today is not None:
        data["claimed_today"] = claimed_today
    return jsonable(data)


def board_item_json(customer: Customer, masked: bool, last_owner: str | None = None) -> dict:
    """A claimable customer as the board shows it (contacts masked when the pool masks them)."""
    return jsonable(
        {
            "id": customer.id,
            "name": customer.name,
            "score": customer.score,
            "grade": customer.grade,
            "region": customer.region,
            "industry": customer.industry,
            "source": customer.source,
            "channel": customer.channel,
            "contact_name": mask_text(customer.contact_name) if masked else customer.contact_name,
            "phone": mask_phone(customer.phone) if masked else customer.phone,
            "masked": masked,
            "senior_only": customer.senior_only,
            "tags": [t.name for t in customer.tags],
            "pool_entered_at": customer.pool_entered_at,
            "last_owner": last_owner,
        }
    )


@bp.route("/pools", methods=["GET"])
@access(Role.REP)
@doc("我可以进入的公海", responses={200: "公海列表,含可领数量与我今日已领"})
def pools_index():
    """Pools the user may open (members; managers and admins see all), with claimable counts (counting stops
    at 1,000: then ``open_customers_capped`` is true) and today's claims,
    the caller's holding count and cap, and the release reasons ``POST /customers/<id>/release`` accepts."""
    me = _me()
    now = clock.now()
    ids = visible_pool_ids(db.session, me)
    pools = db.session.scalars(select(Pool).where(Pool.id.in_(ids)).order_by(Pool.id)).all()
    counts = board_q.pool_counts(db.session, ids, now)
    today = services.claims_today_by_pool(db.session, me, now)
    return jsonify(
        pools=[pool_json(p, counts=counts.get(p.id, {}), claimed_today=today.get(p.id, 0)) for p in pools],
        held=services.held_count(db.session, me.id),
        cap=services.holding_cap(db.session, me),
        release_reasons=services.release_reasons(db.session),
    )


def _pool_form_payload(payload: dict, base: dict | None = None) -> dict:
    data = dict(base or {}) | dict(payload)
    if isinstance(data.get("release_times"), list):
        data["release_times"] = ", ".join(str(t) for t in data["release_times"])
    return data


def _save(pool: Pool | None, payload: dict) -> Pool:
    form = form_from_json(PoolForm, payload)
    try:
        saved = manage.save_pool(db.session, pool, form.cleaned(), _me(), clock.now())
    except services.PoolRefusal as refusal:
        db.session.rollback()
        raise refusal_error(refusal) from refusal
    db.session.commit()
    return saved


@bp.route("/pools", methods=["POST"])
@access(Role.ADMIN)
@doc("新建公海 (管理员)", body=PoolForm, scope="admin", responses={201: "新建的公海"})
def pools_create():
    """Create a pool. ``member_user_ids`` / ``member_team_ids`` / ``admin_user_ids`` are arrays of ids;
    ``release_times`` an array of "HH:MM" (or a comma-separated string). Audited."""
    pool = _save(None, _pool_form_payload(json_body()))
    return jsonify(pool_json(pool)), 201


@bp.route("/pools/<int:pool_id>", methods=["GET"])
@access(Role.REP)
@doc("一个公海的设置", responses={200: "公海"})
def pools_get(pool_id: int):
    """A pool's settings: members, admins, limits, previous-owner rule, masking, auto-assign, fair release."""
    me = _me()
    pool = _pool(pool_id)
    now = clock.now()
    data = pool_json(
        pool,
        counts=board_q.pool_counts(db.session, [pool.id], now)[pool.id],
        claimed_today=services.claims_today(db.session, me, pool.id, now),
    )
    data["is_member"] = is_pool_member(db.session, me, pool)
    data["can_edit"] = can_edit_pool(db.session, me, pool)
    return jsonify(data)


def _ids(value) -> list | None:
    """A sorted list of ids from JSON, or None when it is not a list of integers."""
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return None
    return sorted(value)


@bp.route("/pools/<int:pool_id>", methods=["PATCH"])
@access(Role.REP)
@doc("修改公海设置 (管理员或该公海的管理员;只需给出要改的键)", body=PoolForm, scope="write")
def pools_patch(pool_id: int):
    """Change some settings of a pool. Pool admins who are not admins cannot change ``admin_user_ids``
    (403). Unknown keys are refused (422). Audited."""
    pool = _pool(pool_id)
    payload = json_body()
    unknown = sorted(set(payload) - set(manage.snapshot(pool)))
    if unknown:
        raise ApiError(
            422, "invalid", f"未知字段: {', '.join(unknown)}", fields={k: ["未知字段"] for k in unknown}
        )
    me = _me()
    if not can_edit_pool(db.session, me, pool):
        raise ApiError(403, "forbidden", "只有管理员或该公海的管理员可以修改它。")
    if (
        "admin_user_ids" in payload
        and not me.is_admin
        and _ids(payload["admin_user_ids"]) != manage.admin_user_ids(pool)
    ):
        raise ApiError(403, "forbidden", "公海管理员由系统管理员指定。")
    pool = _save(pool, _pool_form_payload(payload, manage.snapshot(pool)))
    return jsonify(pool_json(pool))


@bp.route("/pools/<int:pool_id>/customers", methods=["GET"])
@access(Role.REP)
@doc("公海看板:可领取的客户 (评分优先,键集分页)", query=BOARD_QUERY, responses={200: "客户与 next_cursor"})
def pools_customers(pool_id: int):
    """The pool's claimable customers, best score first; the same filters as the board. Contacts are
    masked when the pool masks them (except for admins and the pool's admins). Pass ``next_cursor`` back
    as ``cursor`` for the next page; it is null on the last page."""
    me = _me()
    pool = _pool(pool_id)
    filters = board_q.BoardFilters.from_args(request.args)
    if request.args.get("cursor") and filters.cursor is None:
        raise ApiError(400, "bad_request", "cursor 无效,请使用上一页返回的 next_cursor。")
    try:
        limit = max(1, min(int(request.args.get("limit") or board_q.PAGE_SIZE), 100))
    except ValueError as exc:
        raise ApiError(400, "bad_request", "limit 必须是 1–100 的整数。") from exc
    masked = pool.mask_contacts and not is_pool_admin(db.session, me, pool)
    try:
        board_q.guard_phone_search(pool, me, filters, masked, clock.now())
    except board_q.SearchBudgetSpent as exc:
        raise ApiError(429, "search_budget_spent", exc.message) from exc
    page = board_q.board_page(db.session, pool, filters, clock.now(), limit)
    return jsonify(
        items=[board_item_json(c, masked, page.last_owner_names.get(c.id)) for c in page.customers],
        next_cursor=page.next_cursor,
    )
