"""Follow-up screens: the follow-up form as its own page, as a sheet over the inbox and as a customer-page
panel (all post to one endpoint), and the managers' spot-check list."""

from __future__ import annotations

from flask import Blueprint, abort, flash, make_response, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm import clock, hooks
from crm.access import access
from crm.extensions import db
from crm.followups import services, spotcheck
from crm.followups.forms import FollowUpPageForm
from crm.htmx import redirect_htmx, render, render_fragment, toast, trigger
from crm.models import Channel, Customer, FollowUp, Reminder, ReminderStatus, Role, SpotCheck
from crm.permissions import can_edit_customer, can_view_customer
from crm.reminders import services as reminders
from crm.urls import safe_next

bp = Blueprint("followups", __name__)

MODES = ("page", "sheet", "panel")
EVENT_SAVED = "crm:followup-saved"


def _customer_for_followup(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None or not can_view_customer(db.session, current_user, customer):
        abort(404)
    if not can_edit_customer(db.session, current_user, customer):
        abort(403, _("请先领取该客户,再记录跟进。"))
    return customer


def new_form(customer: Customer, reminder_id: int | None = None, *, user=None, **kwargs) -> FollowUpPageForm:
    """A blank follow-up form: 电话, goal not met, next contact +N days at the default hour."""
    user = user or current_user
    now = clock.now()
    form = FollowUpPageForm(formdata=None, **kwargs)
    form.channel.data = Channel.PHONE
    form.next_contact_at.data = clock.to_local_naive(reminders.default_next_contact(db.session, user, now))
    form.reminder_id.data = reminder_id
    return form


def form_context(customer: Customer, form: FollowUpPageForm, *, user=None, **extra) -> dict:
    user = user or current_user
    now = clock.now()
    reminder = None
    if form.reminder_id.data:
        reminder = reminders.answerable(db.session, user, customer, form.reminder_id.data)
    return {
        "customer": customer,
        "form": form,
        "answering": reminder,
        "frequency": services.frequency_state(db.session, customer, user, now),
        "recent": recent_followups(customer.id, 3),
        "channels": Channel.LABELS,
        "picks": reminders.quick_picks(db.session, user, now),
    } | extra


def recent_followups(customer_id: int, limit: int = 5) -> list[FollowUp]:
    return db.session.scalars(
        select(FollowUp).where(FollowUp.customer_id == customer_id).order_by(FollowUp.at.desc()).limit(limit)
    ).all()


def panel_context(session, customer: Customer, user) -> dict | None:
    """Customer-page panel: quick follow-up form, the latest follow-ups and the customer's open reminders.
    Hidden for users who may not record follow-ups on this customer."""
    if customer is None or not can_edit_customer(session, user, customer):
        return None
    form = new_form(customer, user=user)
    open_reminders = session.scalars(
        select(Reminder)
        .where(Reminder.customer_id == customer.id, Reminder.status == ReminderStatus.OPEN)
        .order_by(Reminder.due_at)
        .limit(10)
    ).all()
    return form_context(
        customer, form, user=user, open_reminders=open_reminders, recent=recent_followups(customer.id, 5)
    )


hooks.register_customer_panel(30, "followups", "followups/_panel.html", panel_context)


@bp.route("/customers/<int:customer_id>/followup", methods=["GET", "POST"])
@access(Role.REP)
def followup(customer_id: int):
    """跟进记录: one screen on a phone. ``mode`` = page (own page), sheet (over the inbox) or panel
    (customer page). Saving closes the reminder it answers, creates the next one and tells the page to
    refresh the inbox (``HX-Trigger: crm:followup-saved``)."""
    customer = _customer_for_followup(customer_id)
    mode = request.values.get("mode", "page")
    mode = mode if mode in MODES else "page"
    if request.method == "GET":
        form = new_form(
            customer, request.args.get("reminder_id", type=int), next=request.args.get("next", "")
        )
        block = "followup_sheet" if mode == "sheet" else "followup_form"
        return render("followups/page.html", block, **form_context(customer, form, mode=mode))
    form = FollowUpPageForm()
    warn = False
    if form.validate_on_submit():
        try:
            form.record(db.session, customer, current_user, clock.now())
        except services.FrequencyCapWarning as exc:
            db.session.rollback()
            form.confirm_over_cap.errors = [str(exc)]
            warn = True
        except services.FollowUpError as exc:
            db.session.rollback()
            target = getattr(form, exc.field, None) if exc.field else None
            if target is None:
                target = form.content
            target.errors = [*target.errors, str(exc)]
        else:
            db.session.commit()
            return _saved(customer, form, mode)
    ctx = form_context(customer, form, mode=mode, warn=warn)
    if mode == "panel":
        ctx = panel_context(db.session, customer, current_user) | {"form": form, "warn": warn, "mode": mode}
        return render_fragment("followups/_panel.html", "followup_panel", status=422, ctx=ctx)
    block = "followup_sheet" if mode == "sheet" else "followup_form"
    return render("followups/page.html", block, status=422, **ctx)


def _saved(customer: Customer, form: FollowUpPageForm, mode: str):
    message = _(
        "已保存跟进,下次联系 %(when)s。", when=clock.local(form.next_contact_at.utc).strftime("%m-%d %H:%M")
    )
    if mode == "panel":
        ctx = panel_context(db.session, customer, current_user)
        response = render_fragment("followups/_panel.html", "followup_panel", ctx=ctx)
    elif mode == "sheet":
        response = make_response("", 200)
        response.vary.add("HX-Request")
    else:
        flash(message, "success")
        response = redirect_htmx(safe_next(form.next.data))
    trigger(response, EVENT_SAVED, {"customer_id": customer.id})
    return toast(response, message, "success") if mode != "page" else response


@bp.route("/spot-checks")
@access(Role.MANAGER)
def spot_checks():
    """抽查: the sampled follow-ups of my team to mark genuine or fake (pending first)."""
    pending_only = request.args.get("all") != "1"
    checks = spotcheck.visible_checks(db.session, current_user, pending_only=pending_only)
    return render("followups/spot_checks.html", "spot_list", checks=checks, pending_only=pending_only,
                  labels=spotcheck.VERDICT_LABELS, channels=Channel.LABELS)  # fmt: skip


@bp.route("/spot-checks/<int:check_id>", methods=["POST"])
@access(Role.MANAGER)
def mark_spot_check(check_id: int):
    """Mark one sampled follow-up 真实 or 虚假 (a fake one stops counting as a real touch)."""
    verdict = request.form.get("verdict", "")
    try:
        check = spotcheck.mark(
            db.session, current_user, check_id, verdict, clock.now(), request.form.get("note")
        )
    except spotcheck.SpotCheckError as exc:
        db.session.rollback()
        if exc.code == "not_found":
            abort(404)
        abort(422, str(exc))
    db.session.commit()
    response = render_fragment(
        "followups/spot_checks.html", "spot_item", check=check, labels=spotcheck.VERDICT_LABELS,
        channels=Channel.LABELS,
    )  # fmt: skip
    message = (
        _("已标记为虚假跟进,客户的跟进时间已重新计算。") if verdict == "fake" else _("已标记为真实跟进。")
    )
    return toast(response, message, "success")


def spot_pending_count(session, user) -> int:
    from sqlalchemy import func

    return (
        session.scalar(
            select(func.count())
            .select_from(SpotCheck)
            .where(SpotCheck.manager_id == user.id, SpotCheck.verdict == "pending")
        )
        or 0
    )
