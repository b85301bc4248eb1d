"""Customer screens: the list (客户), the customer page, its timeline fragment, editing fields, contacts, tags.

The customer page renders the panels other features register in ``crm.hooks.CUSTOMER_PANELS`` (recycle due
time, follow-up form, score breakdown, opportunities…), each in its own card
(``<section class="card panel" id="panel-NAME">``) in ``order``, between the ownership card and the
timeline; a panel template renders the inside of the card (a heading and its content).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from crm import clock, hooks
from crm.access import access
from crm.customers import demo as _demo  # noqa: F401  (registers the demo seeder)
from crm.customers import services
from crm.customers.forms import KIND_LABELS, ContactForm, CustomerForm, TagsForm
from crm.customers.timeline import PAGE_SIZE, event_label, parse_cursor, timeline_page
from crm.customers.views import customer_url, first_error
from crm.extensions import db
from crm.forms import choices
from crm.htmx import is_htmx, redirect_htmx, render, toast
from crm.models import Channel, Contact, Customer, Role, Stage, Tag, User
from crm.permissions import (
    can_assign_from_pool,
    can_edit_customer,
    can_release,
    can_transfer,
    can_view_customer,
    is_pool_member,
    team_member_ids,
)
from crm.pool import services as pool_services
from crm.pool.forms import AssignForm, BulkAssignForm, ReleaseForm, ReturnToPoolForm
from crm.pool.routes import counter_context, masks_for

bp = Blueprint("customers", __name__, url_prefix="/customers")


def _me() -> User:
    return current_user._get_current_object()


def _load(customer_id: int) -> Customer:
    """The customer, if the user may see it: 404 when missing, 403 when not theirs to see.

    (Merged customers never get here: ``crm.intake.routes`` redirects every ``customer_id`` route of a
    merged customer to the winner first.)"""
    customer = db.session.get(Customer, customer_id)
    if customer is None or customer.merged_into_id is not None:
        abort(404, _("客户不存在。"))
    if not can_view_customer(db.session, _me(), customer):
        abort(403, _("这个客户不归你负责,也不在你可见的公海中。"))
    return customer


# ---------------------------------------------------------------- list


@bp.route("")
@access(Role.REP)
def index():
    """客户: my customers (managers: the team's, admins: everyone's), with search, filters and sorting."""
    me = _me()
    filters = services.ListFilters.from_args(request.args)
    rows, more = services.customer_list(db.session, me, filters)
    ctx = {
        "rows": rows,
        "more": more,
        "filters": filters,
        "sorts": services.SORTS,
        "now": clock.now(),
        **counter_context(me, None),
    }
    if is_htmx() and filters.page > 1:
        return render("customers/index.html", "list_more", **ctx)
    stages = db.session.scalars(select(Stage).where(Stage.active.is_(True)).order_by(Stage.position)).all()
    tags = db.session.scalars(select(Tag).order_by(Tag.system.desc(), Tag.name)).all()
    owners: list[User] = []
    if me.role == Role.ADMIN:
        owners = list(db.session.scalars(select(User).order_by(User.active.desc(), User.name)))
    elif me.role == Role.MANAGER:
        ids = team_member_ids(db.session, me)
        owners = list(db.session.scalars(select(User).where(User.id.in_(ids)).order_by(User.name)))
    ctx |= {"stages": stages, "tags": tags, "owners": owners}
    if me.is_manager:
        ctx["receivers"] = pool_services.receivers_for(db.session, me, None, clock.now())
        ctx["bulk_form"] = BulkAssignForm(prefix="")
        return_form = ReturnToPoolForm()
        return_form.reason.choices = choices(pool_services.release_reasons(db.session))
        ctx["return_form"] = return_form
    return render("customers/index.html", "customer_list", **ctx)


# ---------------------------------------------------------------- customer page


def _panels(customer: Customer, user: User) -> list[tuple[hooks.Panel, Markup]]:
    return hooks.rendered_panels(hooks.CUSTOMER_PANELS, db.session, customer, user, customer=customer)


def page_context(customer: Customer) -> dict:
    me = _me()
    now = clock.now()
    pool = customer.pool
    masked = customer.owner_id is None and masks_for(pool, me)
    in_pool = customer.owner_id is None
    may_assign = (
        can_assign_from_pool(db.session, me, pool)
        if in_pool and pool is not None
        else can_transfer(db.session, me, customer)
    )
    release_form = None
    if can_release(db.session, me, customer):
        release_form = ReleaseForm()
        release_form.reason.choices = choices(
            [("", _("请选择原因"))] + pool_services.release_reasons(db.session)
        )
    return {
        "customer": customer,
        "pool": pool,
        "masked": masked,
        "can_claim": in_pool and pool is not None and is_pool_member(db.session, me, pool),
        "can_edit": can_edit_customer(db.session, me, customer),
        "release_form": release_form,
        "assign_form": AssignForm() if may_assign else None,
        "receivers": pool_services.receivers_for(db.session, me, customer.pool_id, now) if may_assign else [],
        "can_override": me.is_manager,
        "panels": _panels(customer, me),
        "channel_labels": Channel.LABELS,
        "contact_form": ContactForm(prefix="new") if can_edit_customer(db.session, me, customer) else None,
        "tags_form": TagsForm(data={"tags": ", ".join(t.name for t in customer.tags if not t.system)}),
        "kind_labels": KIND_LABELS,
        "now": now,
        "prev_window": pool_services.previous_owner_window(customer, pool) if pool and in_pool else None,
        # 锁定: the owner locks (within their level's quota); the owner, their manager or an admin unlocks.
        "can_lock": customer.owner_id == me.id and customer.locked_at is None,
        "can_unlock": customer.locked_at is not None and can_release(db.session, me, customer),
        "suggest_extension": _suggest_extension(customer, me, now),
    }


def _suggest_extension(customer: Customer, me: User, now) -> bool:
    """申请延期 in the action bar when a recycle is near (the recycle feature decides)."""
    from crm.recycle.services import extension_suggested

    return extension_suggested(db.session, customer, me, now)


@bp.route("/<int:customer_id>")
@access(Role.REP)
def show(customer_id: int):
    """The customer page: profile, contacts, owner and pool, tags, actions, feature panels and the timeline.

    A merged customer's URL redirects to the customer it was merged into.
    """
    customer = _load(customer_id)
    return render("customers/show.html", **page_context(customer))


@bp.route("/<int:customer_id>/timeline")
@access(Role.REP)
def timeline(customer_id: int):
    """The timeline fragment: follow-ups, activities, stage changes and ledger moves, newest first."""
    customer = _load(customer_id)
    cursor = parse_cursor(request.args.get("before"))
    items, next_cursor = timeline_page(db.session, customer, cursor, PAGE_SIZE)
    ctx = {
        "customer": customer,
        "items": items,
        "next_cursor": next_cursor,
        "event_label": event_label,
        "channel_labels": Channel.LABELS,
        "first_page": cursor is None,
    }
    if is_htmx():
        return render("customers/timeline.html", "timeline_items" if cursor else "timeline", **ctx)
    return render("customers/timeline.html", **ctx)


# ---------------------------------------------------------------- editing


@bp.route("/<int:customer_id>/edit", methods=["GET", "POST"])
@access(Role.REP)
def edit(customer_id: int):
    """Edit the customer's fields. Does not reset any recycle clock (only follow-ups do)."""
    customer = _load(customer_id)
    me = _me()
    if not can_edit_customer(db.session, me, customer):
        if request.method == "GET":
            flash(_("你不能修改这个客户。"), "error")
            return redirect(customer_url(customer))
        abort(403, _("你不能修改这个客户。"))
    form = CustomerForm(obj=customer)
    if form.validate_on_submit():
        data = {name: form[name].data for name in services.EDITABLE}
        try:
            changed = services.update_customer(db.session, customer, me, data, clock.now())
        except services.CustomerError as exc:
            db.session.rollback()
            getattr(form, exc.field or "name").errors = [exc.message]
        else:
            db.session.commit()
            flash(
                _("已保存:%(fields)s。", fields="、".join(changed)) if changed else _("没有改动。"), "success"
            )
            clash = services.duplicate_phone_owner(db.session, customer)
            if clash is not None:
                flash(_("注意:客户「%(name)s」也使用这个电话,可能是重复客户。", name=clash.name), "warning")
            return redirect_htmx(customer_url(customer))
    status = 422 if request.method == "POST" else 200
    return render("customers/edit.html", "customer_form", status=status, customer=customer, form=form)


def _contacts_response(
    customer: Customer,
    form: ContactForm | None = None,
    status: int = 200,
    edit: Contact | None = None,
    edit_form: ContactForm | None = None,
):
    ctx = page_context(customer)
    if form is not None:
        ctx["contact_form"] = form
    ctx["editing"] = edit
    if edit_form is not None:
        ctx["edit_form"] = edit_form
    return render("customers/show.html", "contacts", status=status, **ctx)


@bp.route("/<int:customer_id>/contacts", methods=["POST"])
@access(Role.REP)
def add_contact(customer_id: int):
    """Add a contact (联系人)."""
    customer = _load(customer_id)
    form = ContactForm(prefix="new")
    if form.validate_on_submit():
        try:
            services.save_contact(db.session, customer, _me(), form.data, clock.now())
        except services.CustomerError as exc:
            db.session.rollback()
            if exc.status == 403:
                abort(403, exc.message)
            getattr(form, exc.field or "name").errors = [exc.message]
        else:
            db.session.commit()
            if not is_htmx():
                return redirect(customer_url(customer), 303)
            return toast(
                _contacts_response(db.session.get(Customer, customer.id)), _("已添加联系人。"), "success"
            )
    if not is_htmx():
        flash(first_error(form), "error")
        return redirect(customer_url(customer), 303)
    return _contacts_response(customer, form, 422)


@bp.route("/<int:customer_id>/contacts/<int:contact_id>", methods=["GET", "POST"])
@access(Role.REP)
def edit_contact(customer_id: int, contact_id: int):
    """Edit one contact of the customer."""
    customer = _load(customer_id)
    contact = db.session.get(Contact, contact_id)
    if contact is None or contact.customer_id != customer.id:
        abort(404, _("联系人不存在。"))
    me = _me()
    if not can_edit_customer(db.session, me, customer):
        if request.method == "GET":
            flash(_("你不能修改这个客户。"), "error")
            return redirect(customer_url(customer))
        abort(403, _("你不能修改这个客户。"))
    form = ContactForm(prefix=f"c{contact.id}", obj=contact)
    if form.validate_on_submit():
        try:
            services.save_contact(db.session, customer, me, form.data, clock.now(), contact)
        except services.CustomerError as exc:
            db.session.rollback()
            getattr(form, exc.field or "name").errors = [exc.message]
        else:
            db.session.commit()
            if not is_htmx():
                return redirect(customer_url(customer), 303)
            return toast(
                _contacts_response(db.session.get(Customer, customer.id)), _("已保存联系人。"), "success"
            )
    status = 422 if request.method == "POST" else 200
    if is_htmx():
        return _contacts_response(customer, status=status, edit=contact, edit_form=form)
    return render("customers/contact.html", status=status, customer=customer, contact=contact, form=form)


@bp.route("/<int:customer_id>/tags", methods=["POST"])
@access(Role.REP)
def tags(customer_id: int):
    """Replace the customer's tags (comma separated); system tags such as 高难度 stay."""
    customer = _load(customer_id)
    form = TagsForm()
    message, level = _("已保存标签。"), "success"
    if form.validate_on_submit():
        names = (form.tags.data or "").replace(",", ",").replace("、", ",").split(",")
        try:
            services.set_tags(db.session, customer, _me(), names, clock.now())
        except services.CustomerError as exc:
            db.session.rollback()
            if exc.status == 403:
                abort(403, exc.message)
            message, level = exc.message, "error"
        else:
            db.session.commit()
    else:
        message, level = first_error(form), "error"
    if not is_htmx():
        flash(message, level)
        return redirect(customer_url(customer), 303)
    customer = db.session.get(Customer, customer.id)
    response = render(
        "customers/show.html",
        "tags_card",
        status=200 if level == "success" else 422,
        **page_context(customer),
    )
    return toast(response, message, level)


@bp.app_template_global()
def channel_label(code: str) -> str:
    return _(Channel.LABELS.get(code, code))


@bp.app_template_filter("masked_phone")
def masked_phone(value: str | None) -> str | None:
    from crm.permissions import mask_phone

    return mask_phone(value)


@bp.app_template_filter("masked_text")
def masked_text(value: str | None) -> str | None:
    from crm.permissions import mask_text

    return mask_text(value)
