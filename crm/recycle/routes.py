"""Recycle screens: pool rule settings with live preview, holidays, the run log, the customer's recycle panel
(due time, 延期申请, 长期培育, 保护) and the managers' pending extension requests.

Also registers the extension points: the customer panel, the workbench panel, the customer JSON keys, the
bootstrap holiday seed and the demo rules.
"""

from __future__ import annotations

from datetime import date, datetime

from flask import Blueprint, abort, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from crm import clock, hooks
from crm.access import access
from crm.extensions import db
from crm.htmx import redirect_htmx, render, toast, trigger
from crm.inputguard import year_arg
from crm.models import Customer, ExtensionRequest, Pool, Role, Stage, StageKind
from crm.permissions import can_view_customer
from crm.recycle import calendar, engine, services
from crm.recycle.forms import (
    DecisionForm,
    ExtensionForm,
    HolidayFileForm,
    NurtureForm,
    ProtectForm,
    RulesForm,
    fill_rule_choices,
)
from crm.recycle.sweep import last_runs

bp = Blueprint("recycle", __name__, url_prefix="/recycle")


def _pool_or_404(pool_id: int) -> Pool:
    try:
        pool = services.live_pool(db.session, pool_id)
        services.check_rules_admin(db.session, current_user, pool)
    except services.RecycleError as exc:
        abort(exc.status, exc.message)
    return pool


def _choices_for(form: RulesForm) -> None:
    pools = db.session.scalars(select(Pool).where(Pool.deleted_at.is_(None)).order_by(Pool.name)).all()
    stages = db.session.scalars(
        select(Stage).where(Stage.kind == StageKind.OPEN).order_by(Stage.position)
    ).all()
    fill_rule_choices(form, pools, stages)


def _form_for(pool: Pool, formdata=None) -> RulesForm:
    if formdata is not None:
        form = RulesForm(formdata=formdata)
    else:
        data = {"rules": [r.as_dict() for r in services.rule_defs(db.session, pool.id)]}
        for rule in data["rules"]:
            rule["grades"], rule["kinds"] = list(rule["grades"]), list(rule["kinds"])
        form = RulesForm(data=data)
    _choices_for(form)
    return form


def _page(pool: Pool, form: RulesForm, status: int = 200, block: str | None = None, **extra):
    now = clock.now()
    rules = form.rule_defs(pool.id) if not form.errors else services.rule_defs(db.session, pool.id)
    preview = engine.preview(db.session, pool.id, rules, now)
    return render(
        "recycle/rules.html", block, status=status, pool=pool, form=form, preview=preview, now=now,
        audit=services.rules_audit(db.session, pool.id), **extra,
    )  # fmt: skip


@bp.route("/")
@access(Role.MANAGER)
def index():
    """回收规则: the pools this user may configure, with their rules in words."""
    pools = services.editable_pools(db.session, current_user)
    rules = {p.id: services.rule_defs(db.session, p.id) for p in pools}
    return render("recycle/index.html", pools=pools, rules=rules)


@bp.route("/pools/<int:pool_id>/rules", methods=["GET", "POST"])
@access(Role.MANAGER)
def rules(pool_id: int):
    """Edit a pool's rule list. ``action=add`` adds a blank rule; saving asks for confirmation when the
    change would recycle customers at once."""
    pool = _pool_or_404(pool_id)
    if request.method == "GET":
        return _page(pool, _form_for(pool))
    if request.form.get("action") == "add":
        data = MultiDict(request.form)
        n = len({k.split("-")[1] for k in data if k.startswith("rules-") and k.count("-") >= 2})
        data.add(f"rules-{n}-kind", "no_followup")
        data.add(f"rules-{n}-days", "7")
        data.add(f"rules-{n}-day_kind", "calendar")
        data.add(f"rules-{n}-warn_days", "2")
        data.add(f"rules-{n}-escalate_days", "1")
        data.add(f"rules-{n}-exclude_protected", "y")
        data.add(f"rules-{n}-enabled", "y")
        form = _form_for(pool, data)
        # The editor was swapped: tell the preview to refresh from the new form.
        return trigger(_page(pool, form, block="rules_editor"), "rules-changed")
    form = _form_for(pool, request.form)
    if not form.validate():
        return _page(pool, form, status=422, block="rules_editor")
    try:
        services.save_rules(
            db.session, pool, form.rule_defs(pool.id), current_user, clock.now(), confirm=form.confirm.data
        )
    except services.ConfirmRequired as exc:
        db.session.rollback()
        return _page(pool, form, status=422, block="rules_editor", confirm_count=exc.count)
    except services.RecycleError as exc:
        db.session.rollback()
        return _page(pool, form, status=exc.status, block="rules_editor", error=exc.message)
    db.session.commit()
    response = redirect_htmx(url_for("recycle.rules", pool_id=pool.id, saved=1))
    return toast(response, _("回收规则已保存"), "success")


@bp.route("/pools/<int:pool_id>/rules/preview", methods=["POST"])
@access(Role.MANAGER)
def rules_preview(pool_id: int):
    """规则预演: what the rules in the form would do now (read-only; htmx, as the form changes)."""
    pool = _pool_or_404(pool_id)
    form = _form_for(pool, request.form)
    now = clock.now()
    valid = form.validate()
    rules = form.rule_defs(pool.id) if valid else services.rule_defs(db.session, pool.id)
    preview = engine.preview(db.session, pool.id, rules, now)
    return render(
        "recycle/rules.html", "rule_preview", pool=pool, form=form, preview=preview, now=now,
        preview_invalid=not valid, audit=[],
    )  # fmt: skip


# ---------------------------------------------------------------- holidays and runs


@bp.route("/holidays", methods=["GET", "POST"])
@access(Role.ADMIN)
def holidays():
    """节假日日历: the year's holidays and 调休 workdays; replace a year from a pasted list."""
    year = year_arg() or clock.local_today().year
    form = HolidayFileForm()
    errors: list = []
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        try:
            entries = calendar.parse_holiday_text(form.text.data)
            keep = [
                {"date": h.day.isoformat(), "is_workday": h.is_workday, "name": h.name}
                for h in calendar.list_holidays(db.session)
                if h.day.year != year
            ]
            other_years = [e for e in entries if not e["date"].startswith(f"{year}-")]
            if other_years:
                raise calendar.HolidayError(
                    [(0, _("只能导入 %(y)s 年的日期: %(d)s", y=year, d=other_years[0]["date"]))]
                )
            calendar.replace_holidays(db.session, keep + entries, current_user, clock.now())
            db.session.commit()
            return toast(redirect_htmx(url_for("recycle.holidays", year=year)), _("节假日已保存"), "success")
        except calendar.HolidayError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
    elif request.method == "POST":
        status = 422
    days = calendar.list_holidays(db.session, year)
    if request.method == "GET":
        form.text.data = "\n".join(
            f"{h.day.isoformat()},{'班' if h.is_workday else '休'},{h.name}" for h in days
        )
    return render("recycle/holidays.html", "holiday_form" if status != 200 else None, status=status,
                  year=year, days=days, form=form, errors=errors, months=_months(year, days))  # fmt: skip


def _months(year: int, days) -> list[tuple[int, list[list[tuple[date | None, str]]]]]:
    """The year as 12 month grids (weeks from Monday) of (day, state): state is 休 / 班 / weekend / ''."""
    import calendar as pycal

    marks = {h.day: ("off" if not h.is_workday else "work") for h in days}
    grid = pycal.Calendar(firstweekday=0)
    months = []
    for month in range(1, 13):
        weeks = []
        for week in grid.monthdatescalendar(year, month):
            weeks.append([
                (d, marks.get(d) or ("weekend" if d.weekday() >= 5 else "")) if d.month == month else (None, "")
                for d in week
            ])  # fmt: skip
        months.append((month, weeks))
    return months


@bp.route("/runs")
@access(Role.ADMIN)
def runs():
    """回收日志: recent sweeps — when, as of, how long, what they did, errors."""
    return render("recycle/runs.html", runs=last_runs(db.session, 100), now=clock.now())


# ---------------------------------------------------------------- customer panel


def _customer_or_404(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None or customer.merged_into_id is not None:
        abort(404)
    if not can_view_customer(db.session, current_user, customer):
        abort(403)
    return customer


def panel_context(session, customer: Customer | None, user) -> dict | None:
    """Context of the customer page's 回收 panel (``hooks.register_customer_panel``)."""
    if customer is None:
        return None
    now = clock.now()
    info = engine.due_info(session, customer, now)
    is_owner = customer.owner_id == user.id
    is_manager = user.role in (Role.MANAGER, Role.ADMIN)
    return {
        "recycle": {
            "customer": customer,
            "info": info,
            "now": now,
            "requests": services.customer_requests(session, customer),
            "can_extend": is_owner,
            "can_nurture": customer.owner_id is not None and (is_owner or is_manager),
            "can_protect": is_manager,
            "extension_form": ExtensionForm(formdata=None),
            "nurture_form": NurtureForm(formdata=None),
            "protect_form": ProtectForm(formdata=None),
        }
    }


def _panel(customer: Customer, status: int = 200, **overrides):
    ctx = panel_context(db.session, customer, current_user)
    ctx["recycle"].update(overrides)
    return render("recycle/customer.html", "recycle_panel", status=status, customer=customer, **ctx)


@bp.route("/customers/<int:customer_id>")
@access(Role.REP)
def customer(customer_id: int):
    """The customer's recycle status: next due time and why, extension requests, nurture and protection."""
    return _panel(_customer_or_404(customer_id))


def _day_start(day: date | None) -> datetime | None:
    return clock.at_local(day, 0, 0) if day else None


def _day_end(day: date | None) -> datetime | None:
    return clock.day_bounds(day)[1] if day else None


def _act(customer: Customer, form, form_key: str, action, success: str):
    if not form.validate_on_submit():
        return _panel(customer, 422, **{form_key: form})
    try:
        action()
    except services.RecycleError as exc:
        db.session.rollback()
        form.form_errors.append(exc.message)
        return _panel(customer, exc.status if exc.status != 404 else 422, **{form_key: form})
    db.session.commit()
    db.session.refresh(customer)
    return trigger(toast(_panel(customer), success, "success"), "recycle-changed")


@bp.route("/customers/<int:customer_id>/extension", methods=["POST"])
@access(Role.REP)
def request_extension(customer_id: int):
    """延期申请 from the customer panel."""
    customer = _customer_or_404(customer_id)
    form = ExtensionForm()
    return _act(
        customer, form, "extension_form",
        lambda: services.request_extension(db.session, customer.id, current_user, form.days.data, form.reason.data,
                                           clock.now()),
        _("延期申请已提交,等待主管审批"),
    )  # fmt: skip


@bp.route("/customers/<int:customer_id>/nurture", methods=["POST"])
@access(Role.REP)
def nurture(customer_id: int):
    """长期培育 until a date (empty = cancel)."""
    customer = _customer_or_404(customer_id)
    form = NurtureForm()
    return _act(
        customer, form, "nurture_form",
        lambda: services.set_nurture(db.session, customer.id, current_user, _day_start(form.until.data), clock.now()),
        _("已更新长期培育"),
    )  # fmt: skip


@bp.route("/customers/<int:customer_id>/protect", methods=["POST"])
@access(Role.MANAGER)
def protect(customer_id: int):
    """保护 until the end of a date (empty = cancel)."""
    customer = _customer_or_404(customer_id)
    form = ProtectForm()
    return _act(
        customer, form, "protect_form",
        lambda: services.set_protection(db.session, customer.id, current_user, _day_end(form.until.data), clock.now()),
        _("已更新保护期"),
    )  # fmt: skip


# ---------------------------------------------------------------- extension requests (managers)


def home_panel_context(session, _subject, user) -> dict | None:
    """Workbench panel for managers: pending 延期申请 with approve / reject."""
    if user.role not in (Role.MANAGER, Role.ADMIN):
        return None
    return {"pending": services.pending_requests(session, user), "decision_form": DecisionForm(formdata=None)}


@bp.route("/extension-requests")
@access(Role.MANAGER)
def extension_requests():
    """待审批的延期申请 (also shown on the managers' workbench)."""
    ctx = home_panel_context(db.session, None, current_user)
    return render("recycle/requests.html", "extension_requests", **ctx)


def _request_or_404(request_id: int) -> ExtensionRequest:
    req = db.session.get(ExtensionRequest, request_id)
    if req is None:
        abort(404)
    if not services.can_decide(db.session, current_user, req):
        abort(403)
    return req


@bp.route("/extension-requests/<int:request_id>")
@access(Role.MANAGER)
def extension_request(request_id: int):
    """One 延期申请 with its 批准 / 驳回 buttons: where the manager's notification leads."""
    req = _request_or_404(request_id)
    info = engine.due_info(db.session, req.customer, clock.now())
    return render("recycle/request.html", "extension_request", req=req, info=info,
                  decision_form=DecisionForm(formdata=None))  # fmt: skip


def _decide(request_id: int, approve: bool):
    form = DecisionForm()
    message = _("已批准延期") if approve else _("已驳回延期申请")
    level = "success"
    status = 200
    if form.validate_on_submit():
        try:
            services.decide_extension(
                db.session, request_id, current_user, approve, clock.now(), form.note.data
            )
            db.session.commit()
        except services.RecycleError as exc:
            db.session.rollback()
            if exc.status == 404:
                abort(404, exc.message)
            message, level = exc.message, "error"
            if exc.code == "invalid":
                form.note.errors = [exc.message]
                status = 422
    if request.form.get("context") == "one":
        req = _request_or_404(request_id)
        info = engine.due_info(db.session, req.customer, clock.now())
        response = render("recycle/request.html", "extension_request", status=status, req=req, info=info,
                          decision_form=form)  # fmt: skip
    else:
        ctx = home_panel_context(db.session, None, current_user)
        response = render("recycle/requests.html", "extension_requests", status=status, **ctx)
    return trigger(toast(response, message, level), "recycle-changed")


@bp.route("/extension-requests/<int:request_id>/approve", methods=["POST"])
@access(Role.MANAGER)
def approve_extension(request_id: int):
    """批准延期 (the requester's manager or an admin)."""
    return _decide(request_id, True)


@bp.route("/extension-requests/<int:request_id>/reject", methods=["POST"])
@access(Role.MANAGER)
def reject_extension(request_id: int):
    """驳回延期."""
    return _decide(request_id, False)


# ---------------------------------------------------------------- first contact (workbench)


def first_contact_context(session, _subject, user) -> dict | None:
    """Workbench panel: customers just claimed that wait for their first contact, with the time left."""
    items = services.awaiting_first_contact(session, user, clock.now())
    return {"rows": items} if items else None


@bp.route("/first-contact")
@access(Role.REP)
def first_contact():
    """The 新领取待首联 panel alone (it refreshes itself after a follow-up is saved)."""
    ctx = first_contact_context(db.session, None, current_user) or {"rows": []}
    return render("recycle/_home_first_contact.html", ctx=ctx)


# ---------------------------------------------------------------- extension points


def customer_json(session, customer: Customer, user) -> dict:
    """``GET /api/v1/customers/<id>`` gets ``recycle``: next due time, rule, why, warned/escalated."""
    return {"recycle": engine.due_info(session, customer, clock.now()).as_json()}


def _register() -> None:
    hooks.register_customer_panel(40, "recycle", "recycle/_customer_panel.html", panel_context)
    hooks.register_home_panel(
        30, "extension_requests", "recycle/_home_extensions.html", home_panel_context, min_role=Role.MANAGER
    )
    hooks.register_home_panel(5, "first_contact", "recycle/_home_first_contact.html", first_contact_context)
    hooks.register_customer_json(customer_json)


_register()
