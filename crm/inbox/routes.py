"""Inbox fragments: the four sections (polled while the tab is visible and refreshed by
``crm:followup-saved`` / ``crm:inbox-changed``), a section in full, and a manager's team overdue list.
The page itself is the home screen (``main.home``)."""

from __future__ import annotations

from flask import Blueprint, abort, make_response, request
from flask_login import current_user
from sqlalchemy import func, select

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.htmx import render, render_fragment
from crm.inbox import services
from crm.models import Customer, Role

bp = Blueprint("inbox", __name__, url_prefix="/inbox")


_SENTINEL = 987654321


@bp.app_context_processor
def _kit():
    return {"inbox_kit": inbox_kit}


def inbox_kit() -> dict:
    """Labels and URL patterns of the inbox items, computed once per request: a section renders dozens of
    items, and per-item ``_()`` / ``url_for`` calls dominate the fragment's time otherwise."""
    from flask import g, url_for
    from flask_babel import gettext as _

    from crm.models import ReminderKind
    from crm.reminders.routes import customer_url
    from crm.reminders.services import CONTACT_KINDS

    kit = g.get("_inbox_kit")
    if kit is not None:
        return kit

    def pattern(url: str) -> str:
        return url.replace("{", "{{").replace("}", "}}").replace(str(_SENTINEL), "{}")

    kit = {
        "L": {
            "follow": _("跟进"),
            "later": _("稍后"),
            "done": _("完成"),
            "hot": _("高分"),
            "overdue": _("逾期"),
            "deadline": _("截止"),
            "escalated": _("已通知主管"),
            "touched": _("已跟进"),
            "call": _("拨打"),
            "in_1h": _("1 小时后"),
            "tomorrow": _("明天"),
            "in_3d": _("3 天后"),
            "monday": _("下周一"),
            "at": _("稍后提醒时间"),
            "ok": _("确定"),
            "log_first": _("完成前记录一条跟进?"),
            "log": _("写跟进再完成"),
            "done_only": _("不记录,直接完成"),
            "extend": _("申请延期"),
            "contact_kinds": frozenset(CONTACT_KINDS) - {ReminderKind.CUSTOM},
            "kinds": {k: _(v) for k, v in ReminderKind.LABELS.items()},
        },  # fmt: skip
        "U": {
            "customer": pattern(customer_url(_SENTINEL)),
            "followup": pattern(url_for("followups.followup", customer_id=_SENTINEL)),
            "snooze": pattern(url_for("reminders.snooze", reminder_id=_SENTINEL)),
            "done": pattern(url_for("reminders.done", reminder_id=_SENTINEL)),
        },
    }
    g._inbox_kit = kit
    return kit


def home_context() -> dict:
    """Everything the home screen shows: the inbox, held-customer count and the home panels."""
    from crm import hooks
    from crm.followups.routes import spot_pending_count

    now = clock.now()
    inbox = services.inbox_for(db.session, current_user, now)
    held = db.session.scalar(
        select(func.count()).select_from(Customer).where(Customer.owner_id == current_user.id)
    )
    return {
        "inbox": inbox,
        "held": held,
        "now": now,
        "panels": hooks.rendered_panels(hooks.HOME_PANELS, db.session, None, current_user),
        "spot_pending": spot_pending_count(db.session, current_user) if current_user.is_manager else 0,
    }


def inbox_fragment(known_version: str | None = None):
    """The ``#inbox`` block of the home screen, alone; 204 when the client already shows this version."""
    now = clock.now()
    inbox = services.inbox_for(db.session, current_user, now)
    if known_version and known_version == inbox.version:
        response = make_response("", 204)
        response.vary.add("HX-Request")
        return response
    return render_fragment("main/home.html", "inbox", inbox=inbox, now=now)


def section_fragment(key: str):
    """The ``#section_list`` block of a section page, alone."""
    if key not in services.SECTIONS:
        abort(404)
    now = clock.now()
    section = services.section_items(db.session, current_user, key, now)
    return render_fragment("inbox/section.html", "section_list", section=section, now=now)


@bp.route("/sections")
@access(Role.REP)
def sections():
    """The inbox sections with counts (fragment); ``v`` = the version the page shows (204 if unchanged)."""
    return inbox_fragment(request.args.get("v"))


@bp.route("/section/<key>")
@access(Role.REP)
def section(key: str):
    """One section in full (查看全部)."""
    if key not in services.SECTIONS:
        abort(404)
    now = clock.now()
    return render(
        "inbox/section.html",
        "section_list",
        section=services.section_items(db.session, current_user, key, now),
        now=now,
    )


@bp.route("/team")
@access(Role.MANAGER)
def team():
    """My team's overdue follow-ups, per rep."""
    now = clock.now()
    rows = services.team_overdue(db.session, current_user, now, limit=50)
    return render("inbox/team.html", "team_list", rows=rows, now=now)
