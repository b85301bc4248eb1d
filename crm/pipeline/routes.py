"""Pipeline screens: the opportunities panel on the customer page, opportunity create/edit, the stage-change
form (its requirement part swaps in when a stage is picked), 一转三 conversion, the per-rep kanban
(``/pipeline``) and the admin's stage settings. Thin: parse → ``crm.pipeline.services`` → render."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm import clock, hooks
from crm.access import access
from crm.extensions import db
from crm.htmx import is_htmx, redirect_htmx, render, render_fragment, toast, trigger
from crm.models import Channel, Customer, Opportunity, Role, Stage, StageRequirement, User
from crm.permissions import can_view_customer, can_work_pipeline, manages, team_member_ids
from crm.pipeline import demo as _demo  # noqa: F401  (registers the demo seeder)
from crm.pipeline import services
from crm.pipeline.forms import (
    FUNNEL_LABELS,
    KIND_LABELS,
    REQUIREMENT_LABELS,
    ConvertForm,
    LostReasonsForm,
    OpportunityForm,
    StageForm,
)
from crm.reminders import services as reminders
from crm.settings import store

bp = Blueprint("pipeline", __name__)

EVENT_CHANGED = "crm:pipeline-changed"
CONTEXTS = ("panel", "board", "page")


def _me() -> User:
    return current_user._get_current_object()


def _customer(customer_id: int, *, work: bool = False) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None or customer.merged_into_id is not None:
        abort(404, _("客户不存在。"))
    if not can_view_customer(db.session, _me(), customer):
        abort(403, _("这个客户不归你负责,也不在你可见的公海中。"))
    if work and not can_work_pipeline(db.session, _me(), customer):
        abort(403, _("只有客户负责人、其主管或管理员可以推进阶段。"))
    return customer


def _opportunity(opportunity_id: int, *, work: bool = False) -> Opportunity:
    opp = db.session.get(Opportunity, opportunity_id)
    if opp is None:
        abort(404, _("找不到该商机。"))
    _customer(opp.customer_id, work=work)
    return opp


# ---------------------------------------------------------------- customer-page panel


def panel_context(session, customer: Customer | None, user, **extra) -> dict | None:
    """商机 panel: the customer's opportunities with a stage picker each, a new-opportunity form and, for a
    lead, the 一转三 button. Read-only for users who may only view."""
    if customer is None:
        return None
    can_work = can_work_pipeline(session, user, customer)
    form = extra.pop("form", None) or OpportunityForm(formdata=None)
    return {
        "customer": customer,
        "opportunities": services.customer_opportunities(session, customer.id),
        "stages": services.active_stages(session),
        "can_work": can_work,
        "can_convert": can_work and services.can_convert(customer) and customer.owner_id is not None,
        "opp_form": form,
    } | extra


hooks.register_customer_panel(20, "opportunities", "pipeline/_panel.html", panel_context)


def _panel_response(customer: Customer, status: int = 200, **extra):
    ctx = panel_context(db.session, customer, _me(), **extra)
    return render_fragment("pipeline/_panel.html", "opp_panel", status=status, ctx=ctx, **ctx)


@bp.route("/customers/<int:customer_id>/opportunities", methods=["POST"])
@access(Role.REP)
def create_opportunity(customer_id: int):
    """新建商机 from the customer page (the panel re-renders; 422 with the errors in place)."""
    customer = _customer(customer_id, work=True)
    form = OpportunityForm()
    if form.validate_on_submit():
        data = form.input()
        try:
            services.create_opportunity(db.session, customer, _me(), clock.now(), data)
        except services.StageError as exc:
            db.session.rollback()
            getattr(form, exc.field or "name", form.name).errors.append(exc.message)
        else:
            db.session.commit()
            response = _panel_response(customer)
            trigger(response, "timeline-changed")
            return toast(response, _("已新建商机。"), "success")
    if not is_htmx():
        return render("pipeline/opportunity.html", status=422, form=form, customer=customer, opp=None)
    return _panel_response(customer, 422, form=form, form_open=True)


@bp.route("/opportunities/<int:opportunity_id>/edit", methods=["GET", "POST"])
@access(Role.REP)
def edit_opportunity(opportunity_id: int):
    """Edit an opportunity's name, expected amount and close date."""
    opp = _opportunity(opportunity_id, work=True)
    form = OpportunityForm(obj=opp)
    if form.validate_on_submit():
        data = form.input()
        try:
            services.update_opportunity(db.session, opp, _me(), clock.now(), data)
        except services.StageError as exc:
            db.session.rollback()
            getattr(form, exc.field or "name", form.name).errors.append(exc.message)
        else:
            db.session.commit()
            flash(_("已保存商机。"), "success")
            return redirect_htmx(url_for("customers.show", customer_id=opp.customer_id))
    status = 422 if request.method == "POST" else 200
    return render(
        "pipeline/opportunity.html", "opp_form", status=status, form=form, customer=opp.customer, opp=opp
    )


# ---------------------------------------------------------------- stage change


def _form_defaults(customer: Customer, user: User, now: datetime) -> dict:
    return {
        "channel": Channel.PHONE,
        "next_contact_at": clock.to_local_naive(
            reminders.default_next_contact(db.session, user, now)
        ).strftime("%Y-%m-%dT%H:%M"),
        "valid_until": (clock.local_today(None, now) + timedelta(days=30)).isoformat(),
        "signed_on": clock.local_today(None, now).isoformat(),
        "invoice_title": customer.name,
        "items": [{}, {}, {}],
    }


def _payload_from_form(form) -> dict:
    """The posted stage-change form as the payload ``services.change_stage`` reads (items as a list)."""
    payload = {key: form.get(key) for key in form if not key.startswith("item_")}
    names, qtys, prices = form.getlist("item_name"), form.getlist("item_qty"), form.getlist("item_price")
    items = []
    for name, qty, price in zip(names, qtys, prices, strict=False):
        # Quantity defaults to 1 as a value: a row with only that default is an empty row.
        if (name or "").strip() or (price or "").strip() or (qty or "").strip() not in ("", "1"):
            items.append({"name": name, "qty": qty, "price": price})
    payload["items"] = items
    payload["goal_met"] = form.get("goal_met") in ("y", "1", "on", "true")
    if form.get("confirm_over_cap"):
        payload["confirm_over_cap"] = True
    return payload


def _stage_form_ctx(customer: Customer, opp: Opportunity | None, stage: Stage | None, context: str,
                    values: dict | None = None, error: services.StageError | None = None) -> dict:  # fmt: skip
    now = clock.now()
    typed = {k: v for k, v in (values or {}).items() if v not in ("", None, [])}
    values = _form_defaults(customer, _me(), now) | typed
    if not values.get("items"):
        values["items"] = [{}, {}, {}]
    current = opp.stage if opp is not None else customer.stage
    return {
        "customer": customer,
        "opp": opp,
        "stage": stage,
        "stages": [s for s in services.active_stages(db.session) if current is None or s.id != current.id],
        "current": current,
        "context": context if context in CONTEXTS else "page",
        "values": values,
        "error": error,
        "channels": Channel.LABELS,
        "lost_reasons": services.lost_reasons(db.session),
        "requirement_labels": REQUIREMENT_LABELS,
        "R": StageRequirement,
        "action": url_for("pipeline.move_opportunity", opportunity_id=opp.id)
        if opp is not None
        else url_for("pipeline.move_customer", customer_id=customer.id),
    }


def _selected_stage(value) -> Stage | None:
    try:
        return services.find_stage(db.session, value) if value else None
    except services.StageError:
        return None


@bp.route("/pipeline/stage-form")
@access(Role.REP)
def stage_form():
    """The stage-change form for an opportunity (``opportunity_id``) or a customer (``customer_id``): picking
    a stage swaps in what it requires (quote, follow-up, contract + invoice, lost reason). ``context`` =
    panel / board / page decides where the result goes."""
    opp = None
    if not (request.args.get("opportunity_id", type=int) or request.args.get("customer_id", type=int)):
        return redirect(url_for("pipeline.board"))  # nothing to move: the kanban is where moves start
    if request.args.get("opportunity_id", type=int):
        opp = _opportunity(request.args.get("opportunity_id", type=int), work=True)
        customer = opp.customer
    else:
        customer = _customer(request.args.get("customer_id", type=int) or 0, work=True)
    values = _payload_from_form(request.args)
    stage = _selected_stage(request.args.get("stage"))
    ctx = _stage_form_ctx(customer, opp, stage, request.args.get("context", "page"), values)
    if ctx["context"] == "board":
        return render("pipeline/stage_page.html", "stage_sheet", **ctx)
    return render("pipeline/stage_page.html", "stage_form", **ctx)


def _move(customer: Customer, target, context: str):
    payload = _payload_from_form(request.form)
    stage = _selected_stage(request.form.get("stage"))
    try:
        change = services.change_stage(
            db.session, target, request.form.get("stage"), _me(), clock.now(), payload
        )
    except services.StageError as exc:
        db.session.rollback()
        if exc.code == "forbidden":
            abort(403, exc.message)
        opp = target if isinstance(target, Opportunity) else None
        if opp is not None:
            opp = db.session.get(Opportunity, opp.id)
        customer = db.session.get(Customer, customer.id)
        ctx = _stage_form_ctx(customer, opp, stage, context, payload, exc)
        # A kanban drop (fetch, no form on screen yet) gets the whole sheet; a submitted form its own box.
        block = "stage_sheet" if request.headers.get("X-Crm-Drop") else "stage_form"
        return render("pipeline/stage_page.html", block, status=422, **ctx)
    db.session.commit()
    message = _("已进入「%(stage)s」。", stage=change.to_stage.name)
    if context == "panel" and is_htmx():
        response = _panel_response(db.session.get(Customer, customer.id))
        response.headers["HX-Retarget"], response.headers["HX-Reswap"] = "#opp-panel", "outerHTML"
    elif context == "board" and is_htmx():
        # The sheet closes (empty body); the board refreshes itself on the event below.
        response = render_fragment("pipeline/stage_page.html", "empty")
        response.headers["HX-Retarget"], response.headers["HX-Reswap"] = "#sheet", "innerHTML"
    else:
        flash(message, "success")
        response = redirect_htmx(url_for("customers.show", customer_id=customer.id))
    trigger(response, "timeline-changed")
    trigger(response, EVENT_CHANGED, {"customer_id": customer.id})
    return toast(response, message, "success")


@bp.route("/opportunities/<int:opportunity_id>/stage", methods=["POST"])
@access(Role.REP)
def move_opportunity(opportunity_id: int):
    """Move an opportunity (the kanban's drop, its phone picker and the panel all post here)."""
    opp = _opportunity(opportunity_id, work=True)
    return _move(opp.customer, opp, request.form.get("context", "page"))


@bp.route("/customers/<int:customer_id>/stage", methods=["POST"])
@access(Role.REP)
def move_customer(customer_id: int):
    """Move a customer's stage (its one open opportunity, or the customer itself when it has none)."""
    customer = _customer(customer_id, work=True)
    return _move(customer, customer, request.form.get("context", "page"))


# ---------------------------------------------------------------- 一转三


@bp.route("/customers/<int:customer_id>/convert", methods=["GET", "POST"])
@access(Role.REP)
def convert(customer_id: int):
    """一转三: the lead becomes a customer account, its contact the primary contact, and an opportunity
    opens — one transaction."""
    customer = _customer(customer_id, work=True)
    if request.method == "GET":
        form = ConvertForm(formdata=None, contact_name=customer.contact_name, opportunity_name=customer.name)
    else:
        form = ConvertForm()
    error = None
    if not services.can_convert(customer):
        error = _("该客户已经转化过了。")
    elif form.validate_on_submit():
        data = services.ConversionInput(form.opportunity_name.data, form.amount.data, form.expected_close.data,
                                        form.contact_name.data)  # fmt: skip
        try:
            services.convert_lead(db.session, customer, _me(), clock.now(), data)
        except services.StageError as exc:
            db.session.rollback()
            field = getattr(form, exc.field or "", None)
            if field is not None:
                field.errors.append(exc.message)
            else:
                error = exc.message
        else:
            db.session.commit()
            flash(_("已转化:客户、联系人和商机都已建好。"), "success")
            return redirect_htmx(url_for("customers.show", customer_id=customer.id))
    status = 422 if request.method == "POST" else 200
    return render(
        "pipeline/convert.html", "convert_form", status=status, form=form, customer=customer, error=error
    )


# ---------------------------------------------------------------- kanban


def _board_user(me: User) -> User:
    """Whose board: mine, or (managers, admins) a rep I manage picked with ``user_id``."""
    wanted = request.args.get("user_id", type=int)
    if not wanted or wanted == me.id:
        return me
    user = db.session.get(User, wanted)
    if user is None or not manages(db.session, me, user):
        abort(403, _("只能查看自己团队成员的商机看板。"))
    return user


def _board_people(me: User) -> list[User]:
    if me.role == Role.REP:
        return []
    query = select(User).where(User.active.is_(True)).order_by(User.name)
    if me.role == Role.MANAGER:
        query = query.where(User.id.in_(team_member_ids(db.session, me)))
    return list(db.session.scalars(query))


@bp.route("/pipeline")
@access(Role.REP)
def board():
    """商机看板: a rep's open opportunities in columns by stage. Drag a card to another column on a
    laptop; pick the stage from the card's select on a phone. A stage with a requirement opens its form."""
    me = _me()
    user = _board_user(me)
    stages = services.active_stages(db.session)
    ctx = {
        "user": user,
        "people": _board_people(me),
        "stages": stages,
        "cards": services.board(db.session, user.id),
        "amounts": services.open_amounts(db.session, user.id),
        "can_move": user.id == me.id or manages(db.session, me, user),
    }
    return render("pipeline/board.html", "board", **ctx)


# ---------------------------------------------------------------- admin: stages and lost reasons


def _stage_admin(form: StageForm, stage: Stage | None, status: int = 200, reasons_form=None):
    reasons_form = reasons_form or LostReasonsForm(
        formdata=None, lost_reasons="\n".join(services.lost_reasons(db.session))
    )
    stages = list(db.session.scalars(select(Stage).order_by(Stage.position, Stage.id)))
    return render("pipeline/admin_stages.html", "stage_form", status=status, form=form, stage=stage,
                  stages=stages, reasons_form=reasons_form, requirement_labels=REQUIREMENT_LABELS,
                  kind_labels=KIND_LABELS, funnel_labels=FUNNEL_LABELS)  # fmt: skip


def _save_stage(form: StageForm, stage: Stage | None):
    from crm.pipeline import admin

    try:
        admin.save_stage(db.session, stage, form.data, _me(), clock.now())
    except services.StageError as exc:
        db.session.rollback()
        getattr(form, exc.field or "name", form.name).errors.append(exc.message)
        return None
    db.session.commit()
    flash(_("已保存阶段。"), "success")
    return redirect(url_for("pipeline.admin_stages"))


@bp.route("/admin/pipeline/stages", methods=["GET", "POST"])
@access(Role.ADMIN)
def admin_stages():
    """销售阶段设置: rename, reorder, set requirement, funnel bucket and kind, deactivate; add a stage."""
    if request.method == "GET":
        next_position = (max((s.position for s in services.active_stages(db.session)), default=0)) + 1
        return _stage_admin(StageForm(formdata=None, position=next_position), None)
    form = StageForm()
    if form.validate_on_submit():
        done = _save_stage(form, None)
        if done is not None:
            return done
    return _stage_admin(form, None, 422)


@bp.route("/admin/pipeline/stages/<int:stage_id>", methods=["GET", "POST"])
@access(Role.ADMIN)
def admin_stage(stage_id: int):
    """Edit one stage."""
    stage = db.session.get(Stage, stage_id)
    if stage is None:
        abort(404)
    form = StageForm(obj=stage)
    if request.method == "POST" and form.validate_on_submit():
        done = _save_stage(form, stage)
        if done is not None:
            return done
    return _stage_admin(form, stage, 422 if request.method == "POST" else 200)


@bp.route("/admin/pipeline/lost-reasons", methods=["POST"])
@access(Role.ADMIN)
def admin_lost_reasons():
    """The lost-reason list (one per line); at least one, each ≤ 60 characters."""
    form = LostReasonsForm()
    if form.validate_on_submit():
        reasons = [line.strip() for line in (form.lost_reasons.data or "").splitlines() if line.strip()]
        try:
            store.put(db.session, "pipeline", {"lost_reasons": reasons}, _me(), clock.now())
        except store.SettingsError as exc:
            db.session.rollback()
            form.lost_reasons.errors.append(next(iter(exc.errors.values())))
        else:
            db.session.commit()
            flash(_("已保存输单原因。"), "success")
            return redirect(url_for("pipeline.admin_stages"))
    stage_form = StageForm(formdata=None)
    return _stage_admin(stage_form, None, 422, reasons_form=form)
