"""Pool screens: the pool list (公海), the board with claim / assign, release, departures, pool settings.

Thin routes: parse the form, call ``crm.pool.services`` / ``crm.pool.manage``, render. Board actions answer
htmx with the changed row (swapped in place) and an ``HX-Trigger: holding-changed`` event that refreshes
the holding counter elsewhere on the page; plain form posts get a redirect with a flash message.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, flash, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import bindparam, select

from crm import clock
from crm.access import access
from crm.admin import services as admin_services
from crm.auth.services import AccountError
from crm.customers.views import checks_merged, customer_url, first_error, merged_redirect
from crm.extensions import db
from crm.forms import choices
from crm.htmx import is_htmx, redirect_htmx, render, render_fragment, toast, trigger
from crm.models import Customer, Pool, Role, Team, User
from crm.permissions import (
    can_assign_from_pool,
    can_edit_pool,
    can_release,
    can_transfer,
    is_pool_admin,
    is_pool_member,
    manages,
    manages_a_member,
    pool_role_exprs,
    pool_roles,
    roles_from,
    visible_pool_ids,
)
from crm.pool import board as board_q
from crm.pool import lock as lock_services
from crm.pool import manage, services
from crm.pool.forms import (
    AssignForm,
    BulkAssignForm,
    HandoverForm,
    PoolForm,
    PoolRulesForm,
    ReleaseForm,
    ReturnToPoolForm,
)
from crm.settings import store
from crm.tasks.services import inline_limit
from crm.urls import safe_next

bp = Blueprint("pool", __name__)

HOLDING_CHANGED = "holding-changed"


def _me() -> User:
    return current_user._get_current_object()


def _pool_or_404(pool_id: int) -> Pool:
    pool = db.session.get(Pool, pool_id)
    if pool is None or pool.deleted_at is not None:
        abort(404, _("公海不存在。"))
    return pool


def _customer_or_404(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        abort(404, _("客户不存在。"))
    if customer.merged_into_id is not None:
        abort(404, _("该客户已合并到其他客户。"))
    return customer


@dataclass
class PoolAccess:
    """What the signed-in user may do in one pool, worked out once per request."""

    member: bool  # may see and claim
    pool_admin: bool  # admins and the pool's admins: assign, edit, see unmasked contacts
    can_assign: bool  # pool admins, and managers who are members (permissions.can_assign_from_pool)


def _access_of(user: User, pool_id: int, admin_of: bool, member: bool) -> PoolAccess:
    can_assign = admin_of or (
        user.role == Role.MANAGER and (member or manages_a_member(db.session, user, pool_id))
    )
    return PoolAccess(member=member, pool_admin=admin_of, can_assign=can_assign)


def pool_access(pool: Pool, user: User) -> PoolAccess:
    return _access_of(user, pool.id, *pool_roles(db.session, user, pool))


def _require_pool_view(pool: Pool, rights: PoolAccess | None = None) -> PoolAccess:
    """Members, pool admins, managers and admins may open a pool (SPEC §1); others get 403."""
    me = _me()
    rights = rights or pool_access(pool, me)
    if not rights.member and not me.is_manager:
        abort(403, _("你不是「%(pool)s」的成员。", pool=pool.name))
    return rights


_POOL_WITH_ROLES = select(Pool, *pool_role_exprs(bindparam("uid"), bindparam("team_id"), Pool.id)).where(
    Pool.id == bindparam("pid")
)


def _viewable_pool_or_404(pool_id: int) -> tuple[Pool, PoolAccess]:
    """``_pool_or_404`` and ``_require_pool_view`` in one round trip (the board asks on every request)."""
    me = _me()
    found = db.session.execute(
        _POOL_WITH_ROLES, {"pid": pool_id, "uid": me.id, "team_id": me.team_id}
    ).first()
    if found is None or found[0].deleted_at is not None:
        abort(404, _("公海不存在。"))
    pool = found[0]
    return pool, _require_pool_view(pool, _access_of(me, pool.id, *roles_from(me, found[1], found[2])))


def masks_for(pool: Pool | None, user: User) -> bool:
    """Pools that mask contacts show them masked until claimed, except to admins and the pool's admins."""
    return bool(pool is not None and pool.mask_contacts and not is_pool_admin(db.session, user, pool))


ROW_ID = 987654321


def row_labels(pool: Pool | None) -> dict:
    """Texts and values every board row repeats, worked out once per request instead of once per row."""
    from flask_wtf.csrf import generate_csrf

    return {
        "select": _("选择"),
        "score": _("评分"),
        "hard": _("高难度"),
        "entered": _("入池"),
        "last_owner": _("上一任"),
        "claimed": _("已领取"),
        "follow_up": _("去跟进"),
        "claim": _("领取"),
        "assign": _("分配"),
        "today": _("今天"),
        "days_ago": _("%(n)s 天前"),
        "opens": _("%(when)s 起可领"),
        "opens_at": lambda c: services.embargo_opens_at(pool, c.pool_entered_at),
        "now": clock.now(),
        "csrf": generate_csrf(),
        # URL patterns: the id is swapped in per row (url_for for every row is a measurable cost).
        "show_url": url_for("customers.show", customer_id=ROW_ID),
        "claim_url": url_for("pool.claim", customer_id=ROW_ID),
        "assign_url": url_for("pool.assign", customer_id=ROW_ID),
        "board_url": url_for("pool.board", pool_id=pool.id) if pool is not None else "",
    }


def counter_context(user: User, pool: Pool | None, load: services.UserLoad | None = None) -> dict:
    """The rep's holding counter: held / cap, and today's claims from ``pool`` / its daily limit."""
    load = load or services.user_load(db.session, user, pool.id if pool is not None else None, clock.now())
    ctx = {"held": load.held, "cap": load.cap, "counter_pool": pool}
    if pool is not None:
        ctx["claimed_today"] = load.claims_today
        ctx["daily_limit"] = pool.daily_claim_limit
    return ctx


# ---------------------------------------------------------------- pool list and board


@bp.route("/pools")
@access(Role.REP)
def index():
    """公海: the pools I may open, with how many customers wait in each and my claims today."""
    me = _me()
    now = clock.now()
    ids = visible_pool_ids(db.session, me)
    pools = list(
        db.session.scalars(select(Pool).where(Pool.id.in_(ids)).order_by(Pool.enabled.desc(), Pool.id))
    )
    counts = board_q.pool_counts(db.session, ids, now)
    today = services.claims_today_by_pool(db.session, me, now)
    members = {p.id: is_pool_member(db.session, me, p) for p in pools}
    editable = {p.id: can_edit_pool(db.session, me, p) for p in pools}
    return render(
        "pool/index.html",
        pools=pools,
        counts=counts,
        today=today,
        members=members,
        editable=editable,
        strategy_labels=manage.STRATEGY_LABELS,
        kinds=manage.POOL_KINDS,
        **counter_context(me, None),
    )


def _board_context(pool: Pool, filters: board_q.BoardFilters, rights: PoolAccess | None = None) -> dict:
    me = _me()
    now = clock.now()
    rights = rights or pool_access(pool, me)
    page = board_q.board_page(db.session, pool, filters, now)
    load = services.user_load(db.session, me, pool.id, now)
    return {
        "pool": pool,
        "filters": filters,
        "page": page,
        "masked": pool.mask_contacts and not rights.pool_admin,
        "is_member": rights.member,
        "can_assign": rights.can_assign,
        "can_edit": rights.pool_admin,
        "receivers": services.receivers_for(db.session, me, pool.id, now) if rights.can_assign else [],
        "is_manager": me.is_manager,
        "t": row_labels(pool),
        # 领取 shows disabled with its reason when the claim would be refused (no query per row).
        "gate": services.claim_gate(db.session, me, pool, now, load) if rights.member else None,
        **counter_context(me, pool, load),
    }


@bp.route("/pools/<int:pool_id>")
@access(Role.REP)
def board(pool_id: int):
    """The pool board: claimable customers, best score first; filters, search and "load more" (htmx)."""
    pool, rights = _viewable_pool_or_404(pool_id)
    filters = board_q.BoardFilters.from_args(request.args)
    try:
        board_q.guard_phone_search(
            pool, _me(), filters, pool.mask_contacts and not rights.pool_admin, clock.now()
        )
    except board_q.SearchBudgetSpent as exc:
        abort(429, exc.message)
    ctx = _board_context(pool, filters, rights)
    if filters.cursor is not None and is_htmx():
        return render("pool/board.html", "board_more", **ctx)
    ctx["options"] = board_q.filter_options(db.session, pool)
    return render("pool/board.html", "board_rows", **ctx)


@bp.route("/pools/<int:pool_id>/counter")
@access(Role.REP)
def counter(pool_id: int):
    """The holding counter fragment (持有 x/保有量 · 今日已领 x/上限); refreshed on ``holding-changed``."""
    pool = _pool_or_404(pool_id)
    _require_pool_view(pool)
    return render_fragment("pool/board.html", "holding_counter", pool=pool, **counter_context(_me(), pool))


# ---------------------------------------------------------------- claim


def _row_response(
    customer: Customer,
    state: str,
    message: str | None = None,
    status: int = 200,
    rights: PoolAccess | None = None,
    pool: Pool | None = None,
):
    me = _me()
    if pool is None and customer.pool_id:
        pool = db.session.get(Pool, customer.pool_id)
    if rights is None:
        rights = pool_access(pool, me) if pool is not None else PoolAccess(False, False, False)
    return render(
        "pool/board.html",
        "board_row",
        status=status,
        c=customer,
        pool=pool,
        state=state,
        message=message,
        # Contacts stay masked for everyone but the new owner (a rep who lost the race sees no more).
        masked=bool(pool and pool.mask_contacts and not rights.pool_admin) and customer.owner_id != me.id,
        can_assign=rights.can_assign,
        is_member=rights.member,
        last_owner_name=customer.last_owner.name if customer.last_owner else None,
        t=row_labels(pool),
    )


def _back(default: str) -> str:
    """Where a plain (non-htmx) form post returns: the page it came from on this site, else ``default``."""
    return safe_next(request.form.get("next"), default)


@bp.route("/customers/<int:customer_id>/claim", methods=["POST"])
@access(Role.REP)
@checks_merged
def claim(customer_id: int):
    """领取 a customer from its pool. From the board (``ctx=board``) the row is swapped in place."""
    me = _me()
    from_board = request.form.get("ctx") == "board"
    try:
        result = services.claim(db.session, customer_id, me, clock.now())
    except services.PoolRefusal as refusal:
        if refusal.code == "merged":
            return merged_redirect(customer_id, refusal.detail["merged_into"])
        if not is_htmx():
            flash(refusal.message, "error")
            return redirect(_back(url_for("pool.index")), 303)
        customer = db.session.get(Customer, customer_id)
        if from_board and customer is not None and refusal.code != "not_member":
            state = "taken" if refusal.code in ("taken", "not_found") else "refused"
            return toast(_row_response(customer, state, refusal.message), refusal.message, "error")
        response = make_response("", 204)
        return toast(response, refusal.message, "error")
    message = _(
        "已领取「%(name)s」· 今日 %(used)s/%(limit)s · 持有 %(held)s/%(cap)s",
        name=result.customer.name,
        used=result.claims_today,
        limit=result.daily_limit,
        held=result.held,
        cap=result.cap,
    )
    if not is_htmx():
        flash(message, "success")
        return redirect(_back(customer_url(result.customer)), 303)
    if from_board:
        me = _me()
        rights = PoolAccess(True, result.pool_admin, result.pool_admin or me.role == Role.MANAGER)
        response = _row_response(result.customer, "claimed", rights=rights, pool=result.pool)
    else:
        response = redirect_htmx(customer_url(result.customer))
    trigger(response, HOLDING_CHANGED, {"held": result.held, "cap": result.cap})
    return toast(response, message, "success")


# ---------------------------------------------------------------- release


def _release_form(customer: Customer, form: ReleaseForm | None = None) -> ReleaseForm:
    form = form or ReleaseForm()
    form.reason.choices = choices([("", _("请选择原因"))] + services.release_reasons(db.session))
    return form


@bp.route("/customers/<int:customer_id>/release", methods=["GET", "POST"])
@access(Role.REP)
def release(customer_id: int):
    """退回公海: reason from the configured list and a handoff note, both required."""
    customer = _customer_or_404(customer_id)
    me = _me()
    if not can_release(db.session, me, customer):
        if customer.owner_id is None:
            message = _("该客户已在公海中。")
        else:
            message = _("只有负责人或其主管可以退回该客户。")
        if request.method == "GET":
            flash(message, "error")
            return redirect(customer_url(customer))
        abort(403, message)
    form = _release_form(customer)
    error = None
    if form.validate_on_submit():
        try:
            services.release(db.session, customer.id, me, form.reason.data, form.note.data, clock.now())
        except services.PoolRefusal as refusal:
            error = refusal.message
            target = getattr(form, refusal.detail.get("field") or "", None)
            if target is not None:
                target.errors = [*target.errors, refusal.message]
                error = None
        else:
            message = _("已退回「%(name)s」到公海。", name=customer.name)
            flash(message, "success")
            response = redirect_htmx(url_for("customers.index"))
            return trigger(response, HOLDING_CHANGED)
    status = 422 if request.method == "POST" else 200
    return render(
        "pool/release.html", "release_form", status=status, customer=customer, form=form, error=error
    )


# ---------------------------------------------------------------- assign / transfer


def _assign_allowed(customer: Customer, me: User) -> bool:
    if customer.owner_id is None:
        return customer.pool_id is not None and can_assign_from_pool(db.session, me, customer.pool_id)
    return can_transfer(db.session, me, customer)


@bp.route("/customers/<int:customer_id>/lock", methods=["POST"])
@access(Role.REP)
def lock(customer_id: int):
    """锁定: the owner locks a customer against recycling (within their level's lock quota)."""
    return _lock_action(customer_id, lock_services.lock, _("已锁定,该客户不会被回收。"))


@bp.route("/customers/<int:customer_id>/unlock", methods=["POST"])
@access(Role.REP)
def unlock(customer_id: int):
    """解除锁定: the owner, their manager or an admin."""
    return _lock_action(customer_id, lock_services.unlock, _("已解除锁定。"))


def _lock_action(customer_id: int, action, done: str):
    customer = _customer_or_404(customer_id)
    try:
        action(db.session, customer.id, _me(), clock.now())
    except services.PoolRefusal as refusal:
        if refusal.status == 403:
            abort(403, refusal.message)
        flash(refusal.message, "error")
    else:
        flash(done, "success")
    return redirect_htmx(customer_url(customer))


@bp.route("/customers/<int:customer_id>/assign", methods=["GET", "POST"])
@access(Role.REP)
def assign(customer_id: int):
    """分配 a pool customer or 转移 an owned one to a user (managers, admins, the pool's admins)."""
    customer = _customer_or_404(customer_id)
    me = _me()
    from_board = (request.values.get("ctx") == "board") and is_htmx()
    allowed = _assign_allowed(customer, me)
    message = _("你没有权限分配或转移该客户。")
    if not allowed and request.method == "GET":
        if is_htmx():
            return toast(make_response("", 204), message, "error")
        flash(message, "error")
        return redirect(customer_url(customer))
    if not allowed:
        # Permission before the body: the refusal names why (another team's customer, not a pool admin).
        refusal = services.assign_refusal(db.session, me, customer)
        abort(403, refusal.message if refusal is not None else message)
    form = AssignForm()
    error = None
    if form.validate_on_submit():
        receiver = db.session.get(User, form.user_id.data)
        try:
            result = services.assign(
                db.session, [customer.id], receiver, me, clock.now(),
                override_cap=form.override_cap.data, note=form.note.data or None,
            )  # fmt: skip
        except services.PoolRefusal as refusal:
            error = refusal.message
        else:
            customer = db.session.get(Customer, customer.id)
            message = _("已把「%(name)s」交给 %(user)s。", name=customer.name, user=receiver.name)
            if result.override_used:
                message += _("(已突破保有量上限)")
            if from_board:
                response = _row_response(customer, "assigned", message)
            else:
                flash(message, "success")
                response = redirect_htmx(customer_url(customer))
            return toast(trigger(response, HOLDING_CHANGED), message, "success")
    status = 422 if request.method == "POST" else 200
    ctx = {
        "customer": customer,
        "form": form,
        "error": error,
        "from_board": from_board,
        "receivers": services.receivers_for(db.session, me, customer.pool_id, clock.now()),
        "can_override": me.is_manager,
    }
    response = render("pool/assign.html", "assign_form", status=status, **ctx)
    if from_board and request.method == "POST":
        # Errors go back into the row's form slot, not over the row.
        response.headers["HX-Retarget"] = f"#assign-slot-{customer.id}"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


def _bulk_error(message: str):
    message = str(message)
    if not is_htmx():
        flash(message, "error")
        return redirect(_back(url_for("pool.index")), 303)
    response = make_response("", 422)
    response.headers["HX-Reswap"] = "none"
    return toast(response, message, "error")


def _summary(result: services.AssignResult, receiver: User | None, verb: str) -> str:
    parts = [_("%(verb)s %(n)s 个客户", verb=verb, n=len(result.assigned))]
    if receiver is not None and result.assigned:
        parts[0] += _(" 给 %(name)s", name=receiver.name)
    if result.override_used:
        parts.append(_("已突破保有量上限"))
    if result.refused:
        reasons = sorted({r.message for r in result.refused.values()})
        parts.append(_("%(n)s 个未处理:%(why)s", n=len(result.refused), why=";".join(reasons[:3])))
    return ",".join(parts)


@bp.route("/pools/<int:pool_id>/assign", methods=["POST"])
@access(Role.REP)
def assign_bulk(pool_id: int):
    """Bulk 分配 from the board: the selected customers to one user; the board list is refreshed."""
    pool = _pool_or_404(pool_id)
    me = _me()
    form = BulkAssignForm()
    if not form.validate_on_submit():
        return _bulk_error(first_error(form))
    if not can_assign_from_pool(db.session, me, pool):
        abort(403, _("你不是「%(pool)s」的管理员,不能分配。", pool=pool.name))
    receiver = db.session.get(User, form.user_id.data)
    try:
        result = services.assign(
            db.session, form.customer_ids.data, receiver, me, clock.now(),
            override_cap=form.override_cap.data, note=form.note.data or None,
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        return _bulk_error(refusal.message)
    message = _summary(result, receiver, _("已分配"))
    level = (
        "success" if result.assigned and not result.refused else "error" if not result.assigned else "info"
    )
    if not is_htmx():
        flash(message, level)
        return redirect(url_for("pool.board", pool_id=pool.id), 303)
    filters = board_q.BoardFilters.from_args(request.form)
    filters.cursor = None
    response = render("pool/board.html", "board_rows", **_board_context(pool, filters))
    return toast(trigger(response, HOLDING_CHANGED), message, level)


@bp.route("/customers/transfer", methods=["POST"])
@access(Role.MANAGER)
def transfer_bulk():
    """Bulk 转移 from the customer list: the selected customers to one user (managers, admins)."""
    form = BulkAssignForm()
    if not form.validate_on_submit():
        return _bulk_error(first_error(form))
    receiver = db.session.get(User, form.user_id.data)
    try:
        result = services.transfer(
            db.session, form.customer_ids.data, receiver, _me(), clock.now(),
            override_cap=form.override_cap.data, note=form.note.data or None,
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        return _bulk_error(refusal.message)
    message = _summary(result, receiver, _("已转移"))
    flash(message, "success" if result.assigned else "error")
    return redirect_htmx(_back(url_for("customers.index")))


@bp.route("/customers/return", methods=["POST"])
@access(Role.MANAGER)
def return_bulk():
    """Managers put the selected customers back into their home pools (reason required)."""
    form = ReturnToPoolForm()
    if not form.validate_on_submit():
        return _bulk_error(first_error(form))
    if form.reason.data not in services.release_reasons(db.session):
        return _bulk_error(_("请选择退回原因。"))
    result = services.return_to_pool(
        db.session, form.customer_ids.data, _me(), clock.now(), form.reason.data, form.note.data or None
    )
    message = _summary(result, None, _("已退回公海"))
    flash(message, "success" if result.assigned else "error")
    return redirect_htmx(_back(url_for("customers.index")))


# ---------------------------------------------------------------- departures


def handover_info(user: User) -> dict:
    """What the admin user page needs to offer a departure handover (a Jinja global)."""
    me = _me()
    now = clock.now()
    held = services.held_count(db.session, user.id)
    form = HandoverForm(prefix="ho")
    receivers = [r for r in services.receivers_for(db.session, me, None, now) if r.user.id != user.id]
    form.user_id.choices = choices([(None, _("— 选择接收人 —"))] + [(r.user.id, r.label) for r in receivers])
    pools = db.session.scalars(select(Pool).where(Pool.deleted_at.is_(None)).order_by(Pool.id)).all()
    form.fallback_pool_id.choices = choices([(p.id, p.name) for p in pools])
    homeless = db.session.scalar(
        select(db.func.count())
        .select_from(Customer)
        .where(Customer.owner_id == user.id, Customer.pool_id.is_(None), Customer.merged_into_id.is_(None))
    )
    return {
        "held": held,
        "form": form,
        "homeless": homeless,
        "away": services.is_away(user, now),
        "allowed": manages(db.session, me, user) and me.id != user.id,
    }


@bp.app_context_processor
def _globals():
    return {"handover_info": handover_info}


@bp.route("/users/<int:user_id>/handover", methods=["POST"])
@access(Role.MANAGER)
def handover(user_id: int):
    """离职/休假交接: move all of a user's customers to a colleague or back to their pools, in one action."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, _("用户不存在。"))
    me = _me()
    form = HandoverForm(prefix="ho")
    back = url_for("admin.edit_user", user_id=user.id) if me.is_admin else url_for("customers.index")
    if not form.validate_on_submit():
        flash(first_error(form), "error")
        return redirect(back, 303)
    receiver = None
    if form.mode.data == "user":
        receiver = db.session.get(User, form.user_id.data)
        if receiver is None:
            flash(_("接收人不存在。"), "error")
            return redirect(back, 303)
    if services.held_count(db.session, user.id) > inline_limit():
        return _handover_in_background(user, me, receiver, form, back)
    try:
        result = services.move_all_customers(
            db.session, user, me, clock.now(), to_user=receiver, reason=form.reason.data or None,
            override_cap=form.override_cap.data, fallback_pool_id=form.fallback_pool_id.data,
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        flash(refusal.message, "error")
        return redirect(back, 303)
    flash(_summary(result, receiver, _("已移交")), "success" if not result.refused else "warning")
    if form.deactivate.data and user.active and me.is_admin:
        try:
            admin_services.set_active(db.session, user, me, False, clock.now())
        except AccountError as exc:
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(_("已停用 %(name)s。", name=user.name), "success")
    return redirect(back, 303)


@bp.route("/pools/<int:pool_id>/export", methods=["POST"])
@access(Role.MANAGER)
def export(pool_id: int):
    """导出: the whole pool as CSV or xlsx, produced in the background; the task page offers the file."""
    from crm.pool import export as pool_export

    pool = db.session.get(Pool, pool_id)
    if pool is None or pool.deleted_at is not None:
        abort(404)
    try:
        task = pool_export.start(db.session, pool, _me(), request.form.get("fmt", "xlsx"), clock.now())
    except pool_export.ExportRefused as exc:
        flash(exc.message, "error")
        return redirect_htmx(url_for("pool.board", pool_id=pool.id))
    return redirect_htmx(url_for("tasks.show", task_id=task.id))


def _handover_in_background(user: User, me: User, receiver: User | None, form: HandoverForm, back: str):
    """Many customers: a background task with a progress page (the request answers at once)."""
    from crm.pool import departure

    try:
        task = departure.start(
            db.session, user, me, clock.now(), to_user=receiver, reason=form.reason.data or None,
            override_cap=form.override_cap.data, fallback_pool_id=form.fallback_pool_id.data,
            deactivate=bool(form.deactivate.data),
        )  # fmt: skip
    except services.PoolRefusal as refusal:
        flash(refusal.message, "error")
        return redirect(back, 303)
    return redirect(url_for("tasks.show", task_id=task.id), 303)


# ---------------------------------------------------------------- pool administration


def _pool_form(pool: Pool | None, me: User) -> PoolForm:
    form = PoolForm(obj=pool) if pool is not None else PoolForm()
    if pool is not None and request.method == "GET":
        form.member_user_ids.data = manage.member_user_ids(pool)
        form.member_team_ids.data = manage.member_team_ids(pool)
        form.admin_user_ids.data = manage.admin_user_ids(pool)
        form.release_times.data = ", ".join(pool.release_times or [])
    users = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)).all()
    teams = db.session.scalars(select(Team).order_by(Team.name)).all()
    form.member_user_ids.choices = choices([(u.id, u.name) for u in users])
    form.admin_user_ids.choices = choices([(u.id, u.name) for u in users])
    form.member_team_ids.choices = choices([(t.id, t.name) for t in teams])
    return form


def _save_pool(pool: Pool | None, form: PoolForm):
    me = _me()
    try:
        saved = manage.save_pool(db.session, pool, form.cleaned(), me, clock.now())
    except services.PoolRefusal as refusal:
        db.session.rollback()
        for name, message in (refusal.detail.get("errors") or {"name": refusal.message}).items():
            getattr(form, name).errors = [*getattr(form, name).errors, message]
        return None
    db.session.commit()
    flash(_("已保存公海「%(name)s」。", name=saved.name), "success")
    return redirect_htmx(
        url_for("pool.admin_list") if me.is_admin else url_for("pool.board", pool_id=saved.id)
    )


@bp.route("/admin/pools")
@access(Role.ADMIN)
def admin_list():
    """Settings → 公海池: every pool with its rules at a glance, and the release reasons / default cap."""
    pools = db.session.scalars(select(Pool).where(Pool.deleted_at.is_(None)).order_by(Pool.id)).all()
    counts = board_q.pool_counts(db.session, [p.id for p in pools], clock.now())
    rules = store.get(db.session, "pool")
    rules_form = PoolRulesForm(
        data={
            "release_reasons": "\n".join(rules["release_reasons"]),
            "default_holding_cap": rules["default_holding_cap"],
            "won_count_toward_cap": rules["won_count_toward_cap"],
        }
    )
    return render(
        "pool/admin_list.html",
        pools=pools,
        counts=counts,
        rules_form=rules_form,
        strategy_labels=manage.STRATEGY_LABELS,
        prev_labels=manage.PREV_OWNER_LABELS,
        kinds=manage.POOL_KINDS,
    )


@bp.route("/admin/pools/rules", methods=["POST"])
@access(Role.ADMIN)
def save_rules():
    """Save the release reasons (one per line) and the default holding cap; audited."""
    form = PoolRulesForm()
    if form.validate_on_submit():
        reasons = [line.strip() for line in form.release_reasons.data.splitlines() if line.strip()]
        try:
            store.put(
                db.session, "pool", {"release_reasons": reasons, "default_holding_cap": form.default_holding_cap.data,
                                     "won_count_toward_cap": bool(form.won_count_toward_cap.data)},
                _me(), clock.now(),
            )  # fmt: skip
        except store.SettingsError as exc:
            db.session.rollback()
            for name, message in exc.errors.items():
                getattr(form, name).errors = [*getattr(form, name).errors, message]
        else:
            db.session.commit()
            flash(_("已保存公海规则。"), "success")
            return redirect_htmx(url_for("pool.admin_list"))
    return render("pool/admin_list.html", "rules_form", status=422, rules_form=form)


@bp.route("/admin/pools/new", methods=["GET", "POST"])
@access(Role.ADMIN)
def create():
    """Create a pool."""
    form = _pool_form(None, _me())
    if form.validate_on_submit():
        done = _save_pool(None, form)
        if done is not None:
            return done
    status = 422 if request.method == "POST" else 200
    return render("pool/form.html", "pool_form", status=status, form=form, pool=None, is_admin=True)


@bp.route("/pools/<int:pool_id>/settings", methods=["GET", "POST"])
@access(Role.REP)
def edit(pool_id: int):
    """Edit a pool: admins, and the pool's own admins (who cannot change the pool admins)."""
    pool = _pool_or_404(pool_id)
    me = _me()
    allowed = can_edit_pool(db.session, me, pool)
    message = _("只有管理员或「%(pool)s」的公海管理员可以修改设置。", pool=pool.name)
    if not allowed and request.method == "GET":
        flash(message, "error")
        return redirect(url_for("pool.index"))
    form = _pool_form(pool, me)
    if form.validate_on_submit():
        if not allowed:
            abort(403, message)
        done = _save_pool(pool, form)
        if done is not None:
            return done
    status = 422 if request.method == "POST" else 200
    return render("pool/form.html", "pool_form", status=status, form=form, pool=pool, is_admin=me.is_admin)


@bp.route("/pools/<int:pool_id>/delete", methods=["POST"])
@access(Role.ADMIN)
def delete(pool_id: int):
    """Delete an empty pool (its history stays in the ledger)."""
    pool = _pool_or_404(pool_id)
    try:
        manage.delete_pool(db.session, pool, _me(), clock.now())
    except services.PoolRefusal as refusal:
        db.session.rollback()
        flash(refusal.message, "error")
        return redirect(url_for("pool.edit", pool_id=pool.id), 303)
    db.session.commit()
    flash(_("已删除公海。"), "success")
    return redirect(url_for("pool.admin_list"), 303)
