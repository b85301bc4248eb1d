"""Reminder screens: done / snooze / custom reminders, the in-app notification badge and list, the
calendar feed, and the notification and calendar sections of the profile page."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, current_app, flash, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.htmx import is_htmx, redirect_htmx, render, render_fragment, toast, trigger
from crm.models import Customer, Reminder, ReminderDelivery, ReminderKind, Role, User
from crm.permissions import can_view_customer
from crm.reminders import dispatch, ics, services
from crm.reminders.forms import CustomReminderForm, NotifyPrefsForm, SnoozeForm
from crm.settings import store
from crm.urls import safe_next

bp = Blueprint("reminders", __name__)

EVENT_CHANGED = "crm:inbox-changed"
EVENT_BADGE = "crm:badge-refresh"


# ---------------------------------------------------------------- template helpers


def customer_url(customer_id: int | None) -> str:
    """Where one tap on a customer goes: the customer page when that feature is installed, else the
    follow-up page (which shows the customer card)."""
    if customer_id is None:
        return url_for("main.home")
    endpoint = current_app.extensions.get("crm_customer_endpoint", "")
    if endpoint == "":
        endpoint = None
        for rule in current_app.url_map.iter_rules():
            if (
                rule.rule in ("/customers/<int:customer_id>", "/customers/<customer_id>")
                and "GET" in rule.methods
            ):
                endpoint = rule.endpoint
                break
        current_app.extensions["crm_customer_endpoint"] = endpoint
    if endpoint:
        return url_for(endpoint, customer_id=customer_id)
    return url_for("followups.followup", customer_id=customer_id)


def unread_notifications() -> int:
    if not current_user.is_authenticated:
        return 0
    return dispatch.unread_count(db.session, current_user)


def overdue_for(due_at) -> str:
    """How long ago a reminder fell due: "2 天" / "5 小时" / "12 分钟"."""
    seconds = max(0, (clock.now() - clock.as_utc(due_at)).total_seconds())
    if seconds >= 86400:
        return _("%(n)s 天", n=int(seconds // 86400))
    if seconds >= 3600:
        return _("%(n)s 小时", n=int(seconds // 3600))
    return _("%(n)s 分钟", n=max(1, int(seconds // 60)))


def reminder_profile() -> dict:
    """Context of the notification and calendar sections on the profile page."""
    prefs = services.prefs_of(current_user)
    form = NotifyPrefsForm(formdata=None, prefix="np")
    form.channels.data = prefs.channels
    form.quiet_start.data = prefs.quiet_start
    form.quiet_end.data = prefs.quiet_end
    return _profile_ctx(form)


def _profile_ctx(form: NotifyPrefsForm, **extra) -> dict:
    targets = dispatch.load_targets(db.session)
    return {
        "notify_form": form,
        "available": {c: targets.available(c, current_user) for c in services.CHANNELS},
        "labels": services.CHANNEL_LABELS,
        "has_feed": bool(current_user.ics_token_hash),
    } | extra


@bp.app_context_processor
def _globals():
    return {
        "customer_url": customer_url,
        "overdue_for": overdue_for,
        "unread_notifications": unread_notifications,
        "reminder_profile": reminder_profile,
        "reminder_kind_label": lambda kind: _(ReminderKind.LABELS.get(kind, kind)),
    }


def _back(default: str | None = None) -> str:
    return safe_next(request.form.get("next") or request.args.get("next"), default)


def _inbox_response(message: str, undo: dict | None = None):
    """After done/snooze: htmx gets back what the action's list shows (the inbox or one section, via the
    form's ``target``) plus a badge refresh; a plain form post goes back to the page."""
    target = request.form.get("target", "")
    if is_htmx() and target == "inbox":
        from crm.inbox.routes import inbox_fragment

        response = inbox_fragment()
    elif is_htmx() and target.startswith("section:"):
        from crm.inbox.routes import section_fragment

        response = section_fragment(target.split(":", 1)[1])
    elif is_htmx():
        response = make_response("", 200)
        response.vary.add("HX-Request")
        trigger(response, EVENT_CHANGED)
    else:
        flash(message, "success")
        return redirect(_back())
    # The list came back with the response; only the bell still needs refreshing.
    trigger(response, EVENT_BADGE)
    return toast(response, message, "success", undo)


def _get_reminder(reminder_id: int) -> Reminder:
    try:
        return services.get_for(db.session, current_user, reminder_id)
    except services.ReminderError:
        abort(404)


# ---------------------------------------------------------------- done / snooze


@bp.route("/reminders/<int:reminder_id>/done", methods=["POST"])
@access(Role.REP)
def done(reminder_id: int):
    """完成: close a reminder without a follow-up."""
    reminder = _get_reminder(reminder_id)
    try:
        services.complete(db.session, current_user, reminder, clock.now())
    except services.ReminderError as exc:
        db.session.rollback()
        abort(409, str(exc))
    dispatch.mark_reminder_read(db.session, current_user, reminder.id, clock.now())
    db.session.commit()
    undo = {"url": url_for("reminders.reopen", reminder_id=reminder.id), "label": _("撤销")}
    return _inbox_response(_("已完成: %(title)s", title=reminder.title[:40]), undo)


@bp.route("/reminders/<int:reminder_id>/reopen", methods=["POST"])
@access(Role.REP)
def reopen(reminder_id: int):
    """撤销 a 完成 from its toast: the reminder is open again and the workbench refreshes."""
    reminder = _get_reminder(reminder_id)
    try:
        services.reopen(db.session, current_user, reminder, clock.now())
    except services.ReminderError as exc:
        db.session.rollback()
        abort(409, str(exc))
    db.session.commit()
    if not is_htmx():
        flash(_("已撤销完成。"), "success")
        return redirect(_back())
    response = make_response("", 200)
    response.vary.add("HX-Request")
    trigger(response, EVENT_CHANGED)
    trigger(response, EVENT_BADGE)
    return toast(response, _("已撤销,提醒已恢复。"), "success")


@bp.route("/reminders/<int:reminder_id>/snooze", methods=["POST"])
@access(Role.REP)
def snooze(reminder_id: int):
    """稍后提醒: move a reminder to a time (preset buttons or a chosen time)."""
    reminder = _get_reminder(reminder_id)
    now = clock.now()
    preset = request.form.get("preset")
    until = None
    if preset:
        picks = {
            "1h": now.replace(second=0, microsecond=0) + timedelta(hours=1),
            **{
                str(i): at
                for i, (_label, at) in enumerate(services.quick_picks(db.session, current_user, now))
            },
        }
        until = picks.get(preset)
        if until is None:
            abort(422, _("未知的稍后提醒选项。"))
    else:
        form = SnoozeForm()
        if not form.validate_on_submit():
            errors = form.until.errors or [_("请选择稍后提醒的时间。")]
            abort(422, str(errors[0]))
        until = form.until.utc
    try:
        services.snooze(db.session, current_user, reminder, until, now)
    except services.ReminderError as exc:
        db.session.rollback()
        abort(409 if exc.code == "conflict" else 422, str(exc))
    dispatch.mark_reminder_read(db.session, current_user, reminder.id, now)
    db.session.commit()
    return _inbox_response(_("将于 %(when)s 再次提醒。", when=clock.local(until).strftime("%m-%d %H:%M")))


# ---------------------------------------------------------------- custom reminders


def _custom_ctx(form: CustomReminderForm, customer: Customer | None) -> dict:
    return {
        "form": form,
        "customer": customer,
        "picks": services.quick_picks(db.session, current_user, clock.now()),
    }


@bp.route("/reminders/new", methods=["GET", "POST"])
@access(Role.REP)
def new_reminder():
    """自定义提醒: "下周三提醒我发报价", optionally about a customer."""
    customer_id = request.values.get("customer_id", type=int)
    customer = db.session.get(Customer, customer_id) if customer_id else None
    # Before anything is rendered or read: a customer this user may not see is not there (no name leaks).
    if customer_id and (customer is None or not can_view_customer(db.session, current_user, customer)):
        abort(404)
    if request.method == "GET":
        form = CustomReminderForm(formdata=None)
        form.customer_id.data = customer_id
        form.due_at.data = clock.to_local_naive(
            services.default_next_contact(db.session, current_user, clock.now())
        )
        return render("reminders/new.html", "reminder_form", **_custom_ctx(form, customer))
    form = CustomReminderForm()
    if form.validate_on_submit():
        target = None
        if form.user_id.data and form.user_id.data != current_user.id:
            target = db.session.get(User, form.user_id.data)
            if target is None:
                form.user_id.errors = [_("找不到该用户。")]
        if not form.errors:
            try:
                services.add_custom(
                    db.session, current_user, title=form.title.data, due_at=form.due_at.utc, now=clock.now(),
                    customer=customer, body=form.body.data, for_user=target,
                )  # fmt: skip
            except services.ReminderError as exc:
                db.session.rollback()
                field = getattr(form, exc.field or "title", form.title)
                field.errors = [*field.errors, str(exc)]
            else:
                db.session.commit()
                message = _("已设置提醒: %(when)s", when=clock.local(form.due_at.utc).strftime("%m-%d %H:%M"))
                flash(message, "success")
                response = redirect_htmx(_back())
                return trigger(response, EVENT_CHANGED)
    return render("reminders/new.html", "reminder_form", status=422, **_custom_ctx(form, customer))


@bp.route("/reminders")
@access(Role.REP)
def my_reminders():
    """My upcoming and recent reminders (all kinds), like the API's ``GET /reminders``."""
    now = clock.now()
    rows = db.session.execute(
        select(Reminder, Customer.name)
        .outerjoin(Customer, Customer.id == Reminder.customer_id)
        .where(Reminder.user_id == current_user.id, Reminder.status == "open")
        .order_by(Reminder.due_at)
        .limit(300)
    ).all()
    return render("reminders/list.html", "reminder_list", rows=rows, now=now)


# ---------------------------------------------------------------- in-app notifications


def _notifications():
    return dispatch.in_app_notifications(db.session, current_user)


@bp.route("/notifications")
@access(Role.REP)
def notifications():
    """站内通知: what the reminders told me, newest first; unread ones highlighted."""
    return render("reminders/notifications.html", "notification_list", rows=_notifications())


@bp.route("/notifications/badge")
@access(Role.REP)
def badge():
    """The top bar's bell with the unread count (polled, and refreshed by inbox events)."""
    return render_fragment("reminders/_badge.html", "badge")


@bp.route("/notifications/read", methods=["POST"])
@access(Role.REP)
def mark_all_read():
    """全部已读."""
    dispatch.mark_read(db.session, current_user, clock.now())
    db.session.commit()
    if is_htmx():
        response = render_fragment("reminders/notifications.html", "notification_list", rows=_notifications())
        return trigger(response, EVENT_BADGE)
    return redirect(url_for("reminders.notifications"))


def _extension_request_id(reminder) -> int | None:
    """The request a 延期申请 notice is about (its unique key is ``extension-request:<id>``)."""
    prefix = "extension-request:"
    if reminder.kind != ReminderKind.EXTENSION or not (reminder.unique_key or "").startswith(prefix):
        return None
    tail = reminder.unique_key[len(prefix) :]
    return int(tail) if tail.isdigit() else None


@bp.route("/notifications/<int:delivery_id>")
@access(Role.REP)
def open_notification(delivery_id: int):
    """Open a notification: marks it read and goes to its customer (or the workbench)."""
    delivery = db.session.get(ReminderDelivery, delivery_id)
    if delivery is None or delivery.user_id != current_user.id:
        abort(404)
    dispatch.mark_read(db.session, current_user, clock.now(), [delivery.id])
    db.session.commit()
    reminder = delivery.reminder
    if reminder.kind == ReminderKind.SPOT_CHECK and current_user.is_manager:
        return redirect(url_for("followups.spot_checks"))
    request_id = _extension_request_id(reminder)
    if request_id is not None and current_user.is_manager:
        # The manager's notice of a 延期申请 opens the decision itself (批准 is the next tap).
        return redirect(url_for("recycle.extension_request", request_id=request_id))
    return redirect(customer_url(reminder.customer_id))


# ---------------------------------------------------------------- calendar feed


@bp.route("/calendar/<token>.ics")
@access(None)
def calendar_feed(token: str):
    """The user's reminders as an ICS calendar (secret URL; rotating or revoking it ends access)."""
    user = ics.user_for_token(db.session, token)
    if user is None:
        abort(404)
    app_url = store.get(db.session, "dispatch").get("app_url") or request.host_url.rstrip("/")
    body = ics.feed(db.session, user, clock.now(), app_url=app_url, label=_("公海 CRM"))
    response = make_response(body)
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = 'inline; filename="gonghai-crm.ics"'
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


# ---------------------------------------------------------------- profile sections


@bp.route("/profile/notifications", methods=["POST"])
@access(Role.REP)
def save_prefs():
    """Save my notification channels and quiet hours (免打扰)."""
    form = NotifyPrefsForm(prefix="np")
    if form.validate_on_submit():
        try:
            services.set_prefs(
                db.session, current_user, form.channels.data or [], form.quiet_start.data, form.quiet_end.data
            )
        except services.ReminderError as exc:
            db.session.rollback()
            field = getattr(form, exc.field or "quiet_start")
            field.errors = [*field.errors, str(exc)]
        else:
            db.session.commit()
            if not is_htmx():
                flash(_("通知设置已保存。"), "success")
                return redirect(url_for("auth.profile"))
            response = render_fragment(
                "reminders/_profile.html", "notify_panel", **_profile_ctx(form, saved=True)
            )
            return toast(response, _("通知设置已保存。"), "success")
    return render_fragment("reminders/_profile.html", "notify_panel", status=422, **_profile_ctx(form))


@bp.route("/profile/calendar", methods=["POST"])
@access(Role.REP)
def rotate_calendar():
    """Create (or replace) my secret calendar URL; the old one stops working. Shown once."""
    token = ics.rotate_token(db.session, current_user)
    db.session.commit()
    feed_url = url_for("reminders.calendar_feed", token=token, _external=True)
    form = NotifyPrefsForm(formdata=None, prefix="np")
    prefs = services.prefs_of(current_user)
    form.channels.data, form.quiet_start.data, form.quiet_end.data = (
        prefs.channels,
        prefs.quiet_start,
        prefs.quiet_end,
    )
    if not is_htmx():
        flash(_("新的日历订阅地址: %(url)s", url=feed_url), "success")
        return redirect(url_for("auth.profile"))
    return render_fragment(
        "reminders/_profile.html", "calendar_panel", **_profile_ctx(form, feed_url=feed_url)
    )


@bp.route("/profile/calendar/revoke", methods=["POST"])
@access(Role.REP)
def revoke_calendar():
    """Turn my calendar URL off."""
    ics.revoke_token(db.session, current_user)
    db.session.commit()
    if not is_htmx():
        flash(_("日历订阅已关闭。"), "success")
        return redirect(url_for("auth.profile"))
    return render_fragment("reminders/_profile.html", "calendar_panel", **reminder_profile())


from crm.demo import EXTRA_SEEDERS  # noqa: E402
from crm.reminders import admin  # noqa: E402,F401  (admin pages on this blueprint)
from crm.reminders.demo import seed_reminders  # noqa: E402

if seed_reminders not in EXTRA_SEEDERS:
    EXTRA_SEEDERS.append(seed_reminders)
