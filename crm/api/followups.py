"""Follow-ups and reminders over the API: ``POST /customers/<id>/followups``, ``GET /customers/<id>/followups``,
``GET /reminders``, ``POST /reminders`` (custom), ``POST /reminders/<id>/done`` and ``/snooze``."""

from __future__ import annotations

from flask import jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from crm import clock, hooks
from crm.access import access
from crm.api.core import ApiError, bp, doc, form_from_json, json_body, jsonable
from crm.extensions import db
from crm.followups import services
from crm.followups.forms import FollowUpForm
from crm.models import Customer, FollowUp, Reminder, ReminderKind, ReminderStatus, Role, User
from crm.permissions import can_edit_customer, can_view_customer, manages
from crm.reminders import services as reminders
from crm.reminders.forms import CustomReminderForm, SnoozeForm


def followup_json(fu: FollowUp) -> dict:
    return jsonable(
        {
            "id": fu.id,
            "customer_id": fu.customer_id,
            "user": {"id": fu.user_id, "name": fu.user.name if fu.user else None},
            "at": fu.at,
            "channel": fu.channel,
            "content": fu.content,
            "goal_met": fu.goal_met,
            "next_plan": fu.next_plan,
            "next_contact_at": fu.next_contact_at,
            "answered_reminder_id": fu.answered_reminder_id,
            "over_cap": fu.over_cap,
            "is_fake": fu.is_fake,
        }
    )


def reminder_json(r: Reminder, customer_name: str | None = None) -> dict:
    return jsonable(
        {
            "id": r.id,
            "kind": r.kind,
            "kind_label": ReminderKind.LABELS.get(r.kind, r.kind),
            "title": r.title,
            "body": r.body,
            "due_at": r.due_at,
            "notify_at": r.notify_at or r.due_at,
            "status": r.status,
            "user_id": r.user_id,
            "customer": {"id": r.customer_id, "name": customer_name} if r.customer_id else None,
            "escalated_at": r.escalated_at,
            "snoozed_from": r.original_due_at,
            "done_at": r.done_at,
        }
    )


def _customer(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None or not can_view_customer(db.session, current_user, customer):
        raise ApiError(404, "not_found", _("找不到该客户。"))
    return customer


@bp.route("/customers/<int:customer_id>/followups", methods=["POST"])
@access(Role.REP)
@doc(
    "记录一次跟进",
    body=FollowUpForm,
    scope="write",
    responses={
        201: "已保存:跟进记录与下次联系提醒",
        409: "frequency_cap: 超出联系频率上限(提醒模式),带 confirm_over_cap=true 重试即可保存",
        429: "frequency_blocked: 超出联系频率上限(禁止模式)",
    },
)
def create_followup(customer_id: int):
    """Record a follow-up (channel, content, goal_met, next_plan, next_contact_at). Same rules as the web
    form: the next-contact time is required and in the future; it closes the reminder it answers
    (``reminder_id``) and creates the next-contact reminder."""
    customer = _customer(customer_id)
    if not can_edit_customer(db.session, current_user, customer):  # permission before the body
        raise ApiError(403, "forbidden", _("只有客户负责人、其主管或管理员可以记录跟进。"))
    form = form_from_json(FollowUpForm, json_body())
    try:
        fu = form.record(db.session, customer, current_user, clock.now())
    except services.FrequencyCapWarning as exc:
        db.session.rollback()
        raise ApiError(409, exc.code, str(exc), today=exc.today, week=exc.week) from exc
    except services.FrequencyCapBlocked as exc:
        db.session.rollback()
        raise ApiError(429, exc.code, str(exc)) from exc
    except services.FollowUpForbidden as exc:
        db.session.rollback()
        raise ApiError(403, exc.code, str(exc)) from exc
    except services.FollowUpError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc), fields={exc.field: [str(exc)]} if exc.field else {}) from exc
    db.session.commit()
    next_reminder = db.session.scalar(select(Reminder).where(Reminder.unique_key == f"next:{fu.id}"))
    body = followup_json(fu)
    body["next_reminder"] = reminder_json(next_reminder, customer.name) if next_reminder else None
    return jsonify(body), 201


@bp.route("/customers/<int:customer_id>/followups", methods=["GET"])
@access(Role.REP)
@doc("客户的跟进记录", query={"limit": "最多返回条数 (默认 50, 最大 200)"})
def list_followups(customer_id: int):
    """The customer's follow-ups, newest first (fake ones are included and marked ``is_fake``)."""
    customer = _customer(customer_id)
    limit = min(max(request.args.get("limit", 50, type=int), 1), 200)
    rows = db.session.scalars(
        select(FollowUp).where(FollowUp.customer_id == customer.id).order_by(FollowUp.at.desc()).limit(limit)
    ).all()
    return jsonify(followups=[followup_json(fu) for fu in rows])


@bp.route("/reminders", methods=["GET"])
@access(Role.REP)
@doc(
    "我的提醒",
    query={
        "status": "open (默认) / done / cancelled / all",
        "kind": "提醒类型,如 next_contact / cadence / custom / recycle_warning",
        "from": "到期时间下限 (ISO 8601)",
        "to": "到期时间上限 (ISO 8601)",
        "customer_id": "只看某个客户",
        "user_id": "主管查看团队成员的提醒",
        "limit": "最多返回条数 (默认 100, 最大 500)",
    },
)
def list_reminders():
    """Reminders of the token's user (or, for a manager, of a rep they manage), ordered by due time."""
    user = current_user
    if request.args.get("user_id"):
        target = db.session.get(User, request.args.get("user_id", type=int) or 0)
        if target is None or not (target.id == user.id or manages(db.session, user, target)):
            raise ApiError(404, "not_found", _("找不到该用户。"))
        user = target
    query = select(Reminder, Customer.name).outerjoin(Customer, Customer.id == Reminder.customer_id)
    query = query.where(Reminder.user_id == user.id)
    status = request.args.get("status", ReminderStatus.OPEN)
    if status != "all":
        if status not in ReminderStatus.ALL:
            raise ApiError(422, "invalid", _("status 只能是 open、done、cancelled 或 all。"))
        query = query.where(Reminder.status == status)
    kind = request.args.get("kind")
    if kind:
        if kind not in ReminderKind.ALL:
            raise ApiError(422, "invalid", _("未知的提醒类型: %(kind)s", kind=kind))
        query = query.where(Reminder.kind == kind)
    for arg, op in (("from", "ge"), ("to", "le")):
        if request.args.get(arg):
            try:
                at = clock.parse_iso(request.args[arg])
            except ValueError as exc:
                raise ApiError(422, "invalid", str(exc)) from exc
            when = func.coalesce(Reminder.notify_at, Reminder.due_at)
            query = query.where(when >= at if op == "ge" else when <= at)
    if request.args.get("customer_id"):
        query = query.where(Reminder.customer_id == request.args.get("customer_id", type=int))
    limit = min(max(request.args.get("limit", 100, type=int), 1), 500)
    rows = db.session.execute(query.order_by(Reminder.due_at, Reminder.id).limit(limit)).all()
    return jsonify(reminders=[reminder_json(r, name) for r, name in rows])


@bp.route("/reminders", methods=["POST"])
@access(Role.REP)
@doc("设置自定义提醒", body=CustomReminderForm, scope="write", responses={201: "已创建"})
def create_reminder():
    """A custom reminder ("下周三提醒我发报价") for myself, or for a rep I manage (``user_id``)."""
    form = form_from_json(CustomReminderForm, json_body())
    customer = _customer(form.customer_id.data) if form.customer_id.data else None
    target = None
    if form.user_id.data and form.user_id.data != current_user.id:
        target = db.session.get(User, form.user_id.data)
        if target is None:
            raise ApiError(404, "not_found", _("找不到该用户。"))
    try:
        reminder = reminders.add_custom(
            db.session, current_user, title=form.title.data, due_at=form.due_at.utc, now=clock.now(),
            customer=customer, body=form.body.data, for_user=target,
        )  # fmt: skip
    except reminders.ReminderError as exc:
        db.session.rollback()
        status = {"forbidden": 403, "not_found": 404}.get(exc.code, 422)
        raise ApiError(status, exc.code, str(exc)) from exc
    db.session.commit()
    return jsonify(reminder_json(reminder, customer.name if customer else None)), 201


def _reminder(reminder_id: int) -> Reminder:
    try:
        return reminders.get_for(db.session, current_user, reminder_id)
    except reminders.ReminderError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@bp.route("/reminders/<int:reminder_id>/done", methods=["POST"])
@access(Role.REP)
@doc("完成一条提醒", scope="write")
def reminder_done(reminder_id: int):
    """Close a reminder (409 when it is already done or cancelled)."""
    reminder = _reminder(reminder_id)
    try:
        reminders.complete(db.session, current_user, reminder, clock.now())
    except reminders.ReminderError as exc:
        db.session.rollback()
        raise ApiError(409, "conflict", str(exc)) from exc
    db.session.commit()
    return jsonify(reminder_json(reminder))


@bp.route("/reminders/<int:reminder_id>/snooze", methods=["POST"])
@access(Role.REP)
@doc("稍后提醒", body=SnoozeForm, scope="write")
def reminder_snooze(reminder_id: int):
    """Move a reminder to ``until`` (future, within a year); one already sent is delivered again then."""
    reminder = _reminder(reminder_id)
    form = form_from_json(SnoozeForm, json_body())
    try:
        reminders.snooze(db.session, current_user, reminder, form.until.utc, clock.now())
    except reminders.ReminderError as exc:
        db.session.rollback()
        raise ApiError(409 if exc.code == "conflict" else 422, exc.code, str(exc)) from exc
    db.session.commit()
    return jsonify(reminder_json(reminder))


def _customer_json(session, customer: Customer, user) -> dict:
    """Extra keys of ``GET /customers/<id>``: the next planned contact and the open reminders count."""
    nxt = session.execute(
        select(Reminder.due_at, Reminder.title)
        .where(
            Reminder.customer_id == customer.id,
            Reminder.status == ReminderStatus.OPEN,
            Reminder.kind.in_(reminders.CONTACT_KINDS),
        )
        .order_by(Reminder.due_at)
        .limit(1)
    ).first()
    open_count = session.scalar(
        select(func.count())
        .select_from(Reminder)
        .where(Reminder.customer_id == customer.id, Reminder.status == ReminderStatus.OPEN)
    )
    return jsonable(
        {
            "next_contact": {"at": nxt[0], "title": nxt[1]} if nxt else None,
            "open_reminders": open_count or 0,
            "last_followup_at": customer.last_followup_at,
        }
    )


hooks.register_customer_json(_customer_json)
