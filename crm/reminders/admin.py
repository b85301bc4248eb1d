"""Admin pages of reminders: settings (cadence, frequency caps, spot checks, dispatch), notification
channels (SMTP with a test-send, DingTalk / WeCom / webhook endpoints with a test-send) and the list of
failed deliveries with retry."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.forms import choices
from crm.htmx import is_htmx, render, render_fragment, toast
from crm.inputguard import parse_id
from crm.models import ReminderDelivery, Role, Team, WebhookEndpoint
from crm.reminders import channels, dispatch, endpoints
from crm.reminders import settings as rsettings
from crm.reminders.forms import (
    CadenceForm,
    DispatchForm,
    FrequencyForm,
    SmtpForm,
    SpotCheckSettingsForm,
    WebhookForm,
)
from crm.reminders.routes import bp
from crm.reminders.services import PUSH_CHANNELS, ReminderError
from crm.settings import store

# section → (form class, settings → form data, form → settings)
SECTIONS = {
    "cadence": (
        CadenceForm,
        lambda d: (
            {
                "grade_a": d["grade_days"]["A"],
                "grade_b": d["grade_days"]["B"],
                "grade_c": d["grade_days"]["C"],
            }
            | {
                k: d[k]
                for k in (
                    "new_customer_days",
                    "stall_days",
                    "default_next_days",
                    "default_hour",
                    "overdue_escalation_hours",
                )
            }
        ),  # fmt: skip
        lambda f: (
            {"grade_days": {"A": f.grade_a.data, "B": f.grade_b.data, "C": f.grade_c.data}}
            | {
                k: getattr(f, k).data
                for k in (
                    "new_customer_days",
                    "stall_days",
                    "default_next_days",
                    "default_hour",
                    "overdue_escalation_hours",
                )
            }
        ),  # fmt: skip
    ),
    "frequency_caps": (
        FrequencyForm,
        dict,
        lambda f: {k: getattr(f, k).data for k in ("per_day", "per_week", "mode")},
    ),
    "spot_checks": (
        SpotCheckSettingsForm,
        dict,
        lambda f: {"enabled": bool(f.enabled.data), "daily_sample": f.daily_sample.data},
    ),  # fmt: skip
    "dispatch": (
        DispatchForm,
        dict,
        lambda f: (
            {
                k: getattr(f, k).data
                for k in ("max_attempts", "backoff_seconds", "backoff_max_seconds", "claim_timeout_seconds")
            }
            | {"app_url": f.app_url.data or ""}
        ),  # fmt: skip
    ),
}


def _settings_forms(**override) -> dict:
    forms = {}
    for name, (form_class, to_form, _from_form) in SECTIONS.items():
        if name in override:
            forms[name] = override[name]
            continue
        form = form_class(formdata=None, prefix=name, data=to_form(store.get(db.session, name)))
        forms[name] = form
    return forms


@bp.route("/admin/reminders", methods=["GET", "POST"])
@access(Role.ADMIN)
def admin_settings():
    """提醒与跟进 settings: cadence by grade, new-customer and stall days, default next contact,
    overdue escalation, contact-frequency caps, spot checks and dispatch retries."""
    if request.method == "GET":
        return render("reminders/admin_settings.html", forms=_settings_forms(), labels=_section_labels())
    name = request.form.get("section", "")
    if name not in SECTIONS:
        abort(400, _("未知的设置分区。"))
    form_class, _to_form, from_form = SECTIONS[name]
    form = form_class(prefix=name)
    status = 422
    if form.validate_on_submit():
        try:
            store.put(db.session, name, from_form(form), current_user, clock.now())
        except store.SettingsError as exc:
            db.session.rollback()
            for key, message in exc.errors.items():
                target = getattr(form, key, None) or (form.grade_a if key == "grade_days" else None)
                if target is None:
                    target = next(iter(form))
                target.errors = [*target.errors, message]
        else:
            db.session.commit()
            status = 200
    block = f"section_{name}"
    ctx = {
        "forms": _settings_forms(**{name: form}),
        "labels": _section_labels(),
        "saved": status == 200 and name,
    }
    if not is_htmx():
        if status == 200:
            flash(_("设置已保存。"), "success")
            return redirect(url_for("reminders.admin_settings"))
        return render("reminders/admin_settings.html", status=status, **ctx)
    response = render_fragment("reminders/admin_settings.html", block, status=status, **ctx)
    return toast(response, _("设置已保存。"), "success") if status == 200 else response


def _section_labels() -> dict:
    return {name: _(store.SECTIONS[name].label) for name in SECTIONS}


# ---------------------------------------------------------------- channels


def _smtp_form(formdata=None) -> SmtpForm:
    if formdata is not None:
        return SmtpForm(prefix="smtp")
    form = SmtpForm(formdata=None, prefix="smtp", data=store.get(db.session, "smtp"))
    form.test_to.data = current_user.email
    return form


def _webhook_form(endpoint: WebhookEndpoint | None = None, formdata: bool = False) -> WebhookForm:
    prefix = f"wh{endpoint.id}" if endpoint else "wh"
    if formdata:
        form = WebhookForm(prefix=prefix)
    else:
        form = WebhookForm(formdata=None, prefix=prefix, obj=endpoint)
        if endpoint is not None:
            form.secret.data = ""
            form.url.data = ""
            form.url.render_kw = {"placeholder": endpoints.masked_url(endpoint.url)}
    form.team_id.choices = choices([(None, _("全部(全局)"))] + [(t.id, t.name) for t in _teams()])
    return form


def _teams():
    return db.session.scalars(select(Team).order_by(Team.name)).all()


def _channels_ctx(**extra) -> dict:
    eps = db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.kind, WebhookEndpoint.id)).all()
    teams = {t.id: t.name for t in _teams()}
    ctx = {
        "smtp_form": _smtp_form(),
        "has_password": bool(rsettings.smtp_password(db.session)),
        "endpoints": eps,
        "teams": teams,
        "kinds": channels.KIND_LABELS,
        "masked": endpoints.masked_url,
        "webhook_form": _webhook_form(),
        "edit_forms": {ep.id: _webhook_form(ep) for ep in eps},
    }
    return ctx | extra


@bp.route("/admin/channels")
@access(Role.ADMIN)
def admin_channels():
    """通知渠道: the SMTP server (with a test-send) and the DingTalk / WeCom / webhook endpoints."""
    return render("reminders/admin_channels.html", **_channels_ctx())


def _smtp_config_from(form: SmtpForm) -> channels.SmtpConfig:
    password = form.password.data or rsettings.smtp_password(db.session)
    return channels.SmtpConfig(
        host=(form.host.data or "").strip(), port=form.port.data or 25, security=form.security.data,
        username=(form.username.data or "").strip(), password=password,
        from_addr=(form.from_addr.data or "").strip(), from_name=(form.from_name.data or "").strip(),
        timeout=form.timeout.data or 10,
    )  # fmt: skip


@bp.route("/admin/channels/smtp", methods=["POST"])
@access(Role.ADMIN)
def admin_smtp():
    """Save the SMTP settings, or (``action=test``) send a test email with the values in the form —
    saved or not — and show the server's answer."""
    form = _smtp_form(formdata=True)
    test = request.form.get("action") == "test"
    result = None
    status = 422
    if form.validate_on_submit():
        if test:
            to_addr = form.test_to.data or current_user.email
            if not (form.host.data or "").strip():
                form.host.errors = [_("请先填写 SMTP 服务器。")]
            elif not (form.from_addr.data or "").strip():
                form.from_addr.errors = [_("请先填写发件地址。")]
            else:
                try:
                    channels.try_smtp(_smtp_config_from(form), to_addr)
                except channels.SendError as exc:
                    result = {"ok": False, "message": _("测试发送失败: %(err)s", err=exc)}
                else:
                    result = {"ok": True, "message": _("测试邮件已发送到 %(to)s,请查收。", to=to_addr)}
                    status = 200
        else:
            data = {k: getattr(form, k).data for k in ("host", "port", "security", "username", "from_addr",
                                                       "from_name", "timeout")}  # fmt: skip
            data["enabled"] = bool(form.enabled.data)
            try:
                store.put(db.session, "smtp", data, current_user, clock.now())
                if form.password.data:
                    rsettings.set_smtp_password(db.session, form.password.data, current_user, clock.now())
            except store.SettingsError as exc:
                db.session.rollback()
                for key, message in exc.errors.items():
                    field = getattr(form, key, form.host)
                    field.errors = [*field.errors, message]
            else:
                db.session.commit()
                status = 200
                result = {"ok": True, "message": _("邮件设置已保存。")}
    ctx = _channels_ctx(smtp_form=form, smtp_result=result)
    if not is_htmx():
        return render("reminders/admin_channels.html", status=status, **ctx)
    return render_fragment("reminders/admin_channels.html", "smtp_panel", status=status, **ctx)


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        abort(404)
    return endpoint


def _save_webhook(endpoint: WebhookEndpoint | None):
    form = _webhook_form(endpoint, formdata=True)
    status = 422
    if form.validate_on_submit():
        try:
            endpoints.save_endpoint(
                db.session, current_user, clock.now(), endpoint=endpoint, kind=form.kind.data, name=form.name.data,
                url=form.url.data, secret=form.secret.data, team_id=form.team_id.data, enabled=bool(form.enabled.data),
            )  # fmt: skip
        except ReminderError as exc:
            db.session.rollback()
            field = getattr(form, exc.field or "url", form.url)
            field.errors = [*field.errors, str(exc)]
        else:
            db.session.commit()
            status = 200
    if status == 200:
        ctx = _channels_ctx()
    elif endpoint is None:
        ctx = _channels_ctx(webhook_form=form)
    else:
        ctx = _channels_ctx()
        ctx["edit_forms"][endpoint.id] = form
        ctx["open_edit"] = endpoint.id
    if not is_htmx():
        if status == 200:
            flash(_("通知渠道已保存。"), "success")
            return redirect(url_for("reminders.admin_channels"))
        return render("reminders/admin_channels.html", status=status, **ctx)
    response = render_fragment("reminders/admin_channels.html", "webhooks_panel", status=status, **ctx)
    return toast(response, _("通知渠道已保存。"), "success") if status == 200 else response


@bp.route("/admin/channels/webhooks", methods=["POST"])
@access(Role.ADMIN)
def admin_webhook_new():
    """Add a DingTalk / WeCom robot or a generic webhook (https; robot hosts checked)."""
    return _save_webhook(None)


@bp.route("/admin/channels/webhooks/<int:endpoint_id>", methods=["POST"])
@access(Role.ADMIN)
def admin_webhook_edit(endpoint_id: int):
    """Edit an endpoint (a blank secret keeps the stored one)."""
    return _save_webhook(_endpoint_or_404(endpoint_id))


@bp.route("/admin/channels/webhooks/<int:endpoint_id>/delete", methods=["POST"])
@access(Role.ADMIN)
def admin_webhook_delete(endpoint_id: int):
    """Remove an endpoint."""
    endpoints.delete_endpoint(db.session, current_user, _endpoint_or_404(endpoint_id), clock.now())
    db.session.commit()
    if not is_htmx():
        return redirect(url_for("reminders.admin_channels"))
    return toast(
        render_fragment("reminders/admin_channels.html", "webhooks_panel", **_channels_ctx()), _("已删除。")
    )


@bp.route("/admin/channels/webhooks/<int:endpoint_id>/test", methods=["POST"])
@access(Role.ADMIN)
def admin_webhook_test(endpoint_id: int):
    """Send a test message to an endpoint now and show the answer (or the error)."""
    endpoint = _endpoint_or_404(endpoint_id)
    try:
        channels.try_webhook(endpoint.kind, endpoint.url, endpoint.secret, current_user.name,
                             clock.local(clock.now()).strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    except channels.SendError as exc:
        results = {endpoint.id: {"ok": False, "message": _("测试发送失败: %(err)s", err=exc)}}
    else:
        results = {endpoint.id: {"ok": True, "message": _("测试消息已发送,请在群里查看。")}}
    ctx = _channels_ctx(test_results=results)
    if not is_htmx():
        flash(results[endpoint.id]["message"], "success" if results[endpoint.id]["ok"] else "error")
        return redirect(url_for("reminders.admin_channels"))
    return render_fragment("reminders/admin_channels.html", "webhooks_panel", **ctx)


# ---------------------------------------------------------------- failed deliveries


def _filters(source) -> dispatch.ProblemFilter:
    """The page's filters from the query string (or the retry form); unknown values mean "all"."""
    channel = source.get("channel") or None
    status = source.get("status") or None
    endpoint = source.get("endpoint") or None
    return dispatch.ProblemFilter(
        channel=channel if channel in PUSH_CHANNELS else None,
        status=status if status in dispatch.PROBLEM_STATUSES else None,
        endpoint=endpoint if endpoint in _endpoint_names() else None,
    )


def _endpoint_names() -> dict[str, str]:
    """Endpoint keys (as deliveries record them) → names for the filter."""
    names = {"smtp": _("邮件 (SMTP)")}
    for ep in db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)):
        names[f"endpoint:{ep.id}"] = f"{channels.KIND_LABELS.get(ep.kind, ep.kind)} · {ep.name}"
    return names


def _delivery_stats() -> dict:
    rows = db.session.execute(
        select(ReminderDelivery.status, func.count()).group_by(ReminderDelivery.status)
    ).all()
    return dict(rows)


def _deliveries_ctx(filters: dispatch.ProblemFilter, page: int) -> dict:
    rows, total, page, pages = dispatch.problems_page(db.session, filters, page)
    return {
        "rows": rows, "total": total, "page": page, "pages": pages, "filters": filters,
        "stats": _delivery_stats(), "endpoint_names": _endpoint_names(),
        "backoffs": dispatch.endpoint_backoffs(db.session),
        "labels": dict(channels.KIND_LABELS, in_app=_("站内通知"), email=_("邮件")),
        "channel_choices": PUSH_CHANNELS,
        "query": _query(filters),
    }  # fmt: skip


def _query(filters: dispatch.ProblemFilter) -> dict:
    """The filters as query-string arguments (pagination links, the redirect after a retry)."""
    pairs = (("channel", filters.channel), ("status", filters.status), ("endpoint", filters.endpoint))
    return {k: v for k, v in pairs if v}


@bp.route("/admin/deliveries")
@access(Role.ADMIN)
def admin_deliveries():
    """发送问题: every delivery that gave up or is failing and waiting to retry, paginated, filtered by
    channel / status / endpoint, with their errors and retry buttons."""
    ctx = _deliveries_ctx(_filters(request.args), request.args.get("page", 1, type=int) or 1)
    return render("reminders/admin_deliveries.html", "deliveries_panel", **ctx)


@bp.route("/admin/deliveries/retry", methods=["POST"])
@access(Role.ADMIN)
def admin_retry():
    """Retry one delivery (``id``), or all problems matching the filters (``all``): they go back to the
    queue with fresh attempts."""
    filters = _filters(request.form)
    if request.form.get("all"):
        count = dispatch.retry_matching(db.session, filters, clock.now())
    else:
        ids = [i for i in map(parse_id, request.form.getlist("id")) if i]
        if not ids:
            abort(400)
        count = dispatch.retry(db.session, ids, clock.now())
    db.session.commit()
    from crm import queues

    queues.enqueue("workers.jobs.dispatch_due", queue="dispatch")
    message = _("已重新排队 %(n)s 条,稍后发送。", n=count)
    page = request.form.get("page", 1, type=int) or 1
    if not is_htmx():
        flash(message, "success")
        return redirect(
            url_for("reminders.admin_deliveries", page=page, **_deliveries_ctx(filters, 1)["query"])
        )
    response = render_fragment(
        "reminders/admin_deliveries.html", "deliveries_panel", **_deliveries_ctx(filters, page)
    )
    return toast(response, message, "success")
