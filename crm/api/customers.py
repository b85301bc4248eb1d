"""``/api/v1/customers``: a customer with everything features add, its timeline, and the pool actions
(claim, release, assign/transfer — single and bulk). The same service functions and permissions as the
web screens.

Refusals answer ``{"error": code, "message": …}``: 404 not_found, 403 forbidden / not_member /
senior_only, 409 taken / not_owner, 429 daily_limit, 422 holding_cap / cooldown / priority_window /
not_released / pool_disabled / inactive_user / user_away / invalid.
"""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from crm import clock, hooks
from crm.access import access
from crm.api.core import ApiError, bp, doc, form_from_json, json_body, jsonable
from crm.api.pools import refusal_error
from crm.customers import services as customer_services
from crm.customers.timeline import PAGE_SIZE, item_json, parse_cursor, timeline_page
from crm.extensions import db
from crm.models import Customer, Role, User
from crm.permissions import can_view_customer, is_pool_admin, mask_phone, mask_text
from crm.pool import lock as lock_services
from crm.pool import services
from crm.pool.forms import AssignForm, BulkAssignForm, ReleaseForm

REFUSALS = {
    200: "成功",
    403: "forbidden / not_member / senior_only: 无权操作",
    404: "not_found: 客户不存在",
    409: "taken: 已被他人领取 / not_owner: 已不在你名下",
    422: "holding_cap / cooldown / priority_window / not_released / pool_disabled / inactive_user / "
    "user_away / invalid",
    429: "daily_limit: 今日领取已达上限",
}


def _me() -> User:
    return current_user._get_current_object()


def _customer(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise ApiError(404, "not_found", "客户不存在。")
    if customer.merged_into_id is not None:
        raise ApiError(404, "not_found", "该客户已合并到其他客户。", merged_into_id=customer.merged_into_id)
    if not can_view_customer(db.session, _me(), customer):
        raise ApiError(403, "forbidden", "这个客户不归你负责,也不在你可见的公海中。")
    return customer


def _masked(customer: Customer, user: User) -> bool:
    pool = customer.pool
    return bool(
        customer.owner_id is None
        and pool is not None
        and pool.mask_contacts
        and not is_pool_admin(db.session, user, pool)
    )


def customer_json(customer: Customer, user: User) -> dict:
    """The customer as ``GET /customers/<id>`` answers it, plus every ``crm.hooks.CUSTOMER_JSON`` extra."""
    masked = _masked(customer, user)

    def contact(value, masker):
        return masker(value) if masked else value

    data = {
        "id": customer.id,
        "name": customer.name,
        "kind": customer.kind,
        "lifecycle": customer.lifecycle,
        "owner": {"id": customer.owner.id, "name": customer.owner.name} if customer.owner else None,
        "pool": {"id": customer.pool.id, "name": customer.pool.name} if customer.pool else None,
        "in_pool": customer.owner_id is None,
        "locked_at": customer.locked_at,
        "stage": {"id": customer.stage.id, "name": customer.stage.name} if customer.stage else None,
        "score": customer.score,
        "grade": customer.grade,
        "score_breakdown": customer.score_breakdown,
        "win_probability": customer.win_probability,
        "tags": [t.name for t in customer.tags],
        "senior_only": customer.senior_only,
        "contact_name": contact(customer.contact_name, mask_text),
        "job_title": customer.job_title,
        "phone": contact(customer.phone, mask_phone),
        "email": contact(customer.email, mask_text),
        "wechat": contact(customer.wechat, mask_text),
        "masked": masked,
        "region": customer.region,
        "industry": customer.industry,
        "company_size": customer.company_size,
        "source": customer.source,
        "channel": customer.channel,
        "campaign": customer.campaign,
        "arrived_at": customer.arrived_at,
        "holding_no": customer.holding_no,
        "claimed_at": customer.claimed_at,
        "first_contact_at": customer.first_contact_at,
        "last_followup_at": customer.last_followup_at,
        "holding_followups": customer.holding_followups,
        "last_owner_id": customer.last_owner_id,
        "last_released_at": customer.last_released_at,
        "visible_from": customer.visible_from,
        "protected_until": customer.protected_until,
        "nurture_until": customer.nurture_until,
        "contacts": [
            {
                "id": c.id,
                "name": contact(c.name, mask_text),
                "job_title": c.job_title,
                "phone": contact(c.phone, mask_phone),
                "email": contact(c.email, mask_text),
                "wechat": contact(c.wechat, mask_text),
                "is_primary": c.is_primary,
            }
            for c in customer.contacts
        ],
    }
    for extra in hooks.CUSTOMER_JSON:
        data.update(extra(db.session, customer, user) or {})
    return jsonable(data)


@bp.route("/customers", methods=["GET"])
@access(Role.REP)
@doc(
    "我的客户 (主管: 团队的, 管理员: 全部)",
    query={"q": "名称/联系人/完整电话", "grade": "A/B/C", "stage": "阶段 id", "owner": "负责人 id",
           "tag": "标签 id", "sort": "score|stale|claimed|name", "page": "页码"},
)  # fmt: skip
def customers_index():
    """The customer list the web 客户 tab shows, 30 per page (``has_more`` says whether a next page exists)."""
    me = _me()
    filters = customer_services.ListFilters.from_args(request.args)
    rows, more = customer_services.customer_list(db.session, me, filters)
    return jsonify(items=[customer_json(c, me) for c in rows], page=filters.page, has_more=more)


@bp.route("/customers/<int:customer_id>", methods=["GET"])
@access(Role.REP)
@doc("一个客户:负责人、公海、阶段、等级、评分、标签、联系人及各功能的附加信息")
def customers_get(customer_id: int):
    """Owner, pool, stage, grade, score with breakdown, tags, contacts (masked in masking pools until
    claimed), holding clocks, and the keys other features add (next due time with its rule, …)."""
    return jsonify(customer_json(_customer(customer_id), _me()))


@bp.route("/customers/<int:customer_id>/timeline", methods=["GET"])
@access(Role.REP)
@doc(
    "客户时间线:跟进、动态、阶段变化与流转记录 (含被合并客户的),新的在前",
    query={"before": "上一页返回的 next_cursor", "limit": "每页条数 1–100,默认 20"},
)
def customers_timeline(customer_id: int):
    """One merged, newest-first list; ledger items carry who/from/to/pool/reason/note/holding follow-ups/result."""
    customer = _customer(customer_id)
    cursor = parse_cursor(request.args.get("before"))
    if request.args.get("before") and cursor is None:
        raise ApiError(400, "bad_request", "before 无效,请使用上一页返回的 next_cursor。")
    try:
        limit = max(1, min(int(request.args.get("limit") or PAGE_SIZE), 100))
    except ValueError as exc:
        raise ApiError(400, "bad_request", "limit 必须是 1–100 的整数。") from exc
    items, next_cursor = timeline_page(db.session, customer, cursor, limit)
    return jsonify(items=[item_json(i) for i in items], next_cursor=next_cursor)


@bp.route("/customers/<int:customer_id>/claim", methods=["POST"])
@access(Role.REP)
@doc("领取 (无请求体)", scope="write", responses=REFUSALS)
def customers_claim(customer_id: int):
    """Claim a pool customer. Race-safe: of two simultaneous claims one wins, the other gets 409 taken
    ("已被 XX 领取"). 429 daily_limit carries ``used``/``limit``; 422 holding_cap carries ``held``/``cap``."""
    me = _me()
    try:
        result = services.claim(db.session, customer_id, me, clock.now())
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return jsonify(
        customer=customer_json(result.customer, me),
        claims_today=result.claims_today,
        daily_limit=result.daily_limit,
        held=result.held,
        cap=result.cap,
    )


@bp.route("/customers/<int:customer_id>/release", methods=["POST"])
@access(Role.REP)
@doc("退回公海 (原因 + 交接说明,均必填)", body=ReleaseForm, scope="write", responses=REFUSALS)
def customers_release(customer_id: int):
    """Put an owned customer back into its pool. ``reason`` must be one of the configured release reasons
    (``GET /settings/pool`` → ``release_reasons``); ``note`` 2–1000 characters. The day's claim count is not
    refunded. Permission is checked before the body (403 before 422)."""
    me = _me()
    refusal = services.release_refusal(db.session, me, _customer(customer_id))
    if refusal is not None:
        raise refusal_error(refusal)
    form = form_from_json(ReleaseForm, json_body())
    try:
        customer = services.release(
            db.session, customer_id, me, form.reason.data, form.note.data, clock.now()
        )
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return jsonify(customer=customer_json(customer, me))


@bp.route("/customers/<int:customer_id>/lock", methods=["POST"])
@access(Role.REP)
@doc("锁定客户 (负责人,按职级的锁定名额;锁定的客户不会被回收)", scope="write", responses=REFUSALS)
def customers_lock(customer_id: int):
    """The owner locks a held customer so that no recycle rule takes it back; 422 ``lock_quota`` when the
    level's quota is used up. Ledgered; the lock ends with the holding."""
    me = _me()
    _customer(customer_id)
    try:
        customer = lock_services.lock(db.session, customer_id, me, clock.now())
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return jsonify(customer=customer_json(customer, me))


@bp.route("/customers/<int:customer_id>/unlock", methods=["POST"])
@access(Role.REP)
@doc("解除锁定 (负责人、其主管或管理员)", scope="write", responses=REFUSALS)
def customers_unlock(customer_id: int):
    """Unlock a locked customer (the owner, their manager or an admin). Ledgered."""
    me = _me()
    _customer(customer_id)
    try:
        customer = lock_services.unlock(db.session, customer_id, me, clock.now())
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return jsonify(customer=customer_json(customer, me))


@bp.route("/customers/<int:customer_id>/assign", methods=["POST"])
@access(Role.REP)
@doc("分配/转移给一个用户 (主管、管理员、公海管理员)", body=AssignForm, scope="write", responses=REFUSALS)
def customers_assign(customer_id: int):
    """Assign a pool customer (managers, admins, the pool's admins) or transfer an owned one (the owner's
    manager, admins) to ``user_id``. The receiver's holding cap holds (422 holding_cap) unless
    ``override_cap`` is true and the caller is a manager or admin; the override is ledgered. Permission
    on the customer is checked before the body (403 before 422)."""
    me = _me()
    refusal = services.assign_refusal(db.session, me, _customer(customer_id))
    if refusal is not None:
        raise refusal_error(refusal)
    form = form_from_json(AssignForm, json_body())
    receiver = db.session.get(User, form.user_id.data)
    try:
        result = services.assign(
            db.session, [customer_id], receiver, me, clock.now(),
            override_cap=form.override_cap.data, note=form.note.data or None,
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    customer = db.session.get(Customer, customer_id)
    return jsonify(customer=customer_json(customer, me), override_used=result.override_used)


@bp.route("/customers/assign", methods=["POST"])
@access(Role.REP)
@doc("批量分配/转移 (customer_ids 数组,最多 500 个)", body=BulkAssignForm, scope="write", responses=REFUSALS)
def customers_assign_bulk():
    """Assign or transfer several customers to ``user_id``. Customers that cannot move are listed in
    ``refused`` with their error code and message; the rest move (200). The cap is checked for the whole
    batch: if it does not fit, nothing moves (422 holding_cap) unless ``override_cap``."""
    form = form_from_json(BulkAssignForm, json_body())
    receiver = db.session.get(User, form.user_id.data)
    try:
        result = services.assign(
            db.session, form.customer_ids.data, receiver, _me(), clock.now(),
            override_cap=form.override_cap.data, note=form.note.data or None,
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return jsonify(
        assigned=result.assigned,
        refused=[{"id": cid, "error": r.code, "message": r.message} for cid, r in result.refused.items()],
        override_used=result.override_used,
    )
