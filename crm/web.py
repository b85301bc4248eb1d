"""Request hooks and template helpers shared by every page."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import unquote_to_bytes

from flask import Flask, abort, request
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup

from crm import clock
from crm.models import Role


def _reject_non_utf8_forms():
    """A form post whose bytes are not UTF-8 gets a clear 400 instead of silently lost or mangled text.

    Runs before CSRF protection parses the form, so it sees the raw body.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if request.mimetype == "application/x-www-form-urlencoded":
        raw = request.get_data(cache=True)
        try:
            for pair in raw.split(b"&"):
                unquote_to_bytes(pair.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            abort(400, _("提交的内容不是有效的 UTF-8 文本。"))
    elif request.mimetype == "multipart/form-data" and any("\ufffd" in v for v in request.form.values()):
        abort(400, _("提交的内容不是有效的 UTF-8 文本。"))


def _headers(response):
    if response.mimetype == "text/html":
        response.vary.add("HX-Request")
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/f/"):  # public lead forms may be embedded in an iframe
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    return response


def fmt_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time shown in the team's time zone."""
    if value is None:
        return ""
    return clock.local(value).strftime(fmt)


def fmt_relative(value: datetime | None) -> str:
    """ "3 天前" / "2 小时后" relative to now."""
    if value is None:
        return ""
    delta = clock.as_utc(value) - clock.now()
    seconds = abs(delta.total_seconds())
    future = delta.total_seconds() > 0
    if seconds < 60:
        return _("刚刚")
    # One msgid per unit and direction, with plural forms, so English reads "1 day ago" / "3 days ago".
    if seconds < 3600:
        n = int(seconds // 60)
        if future:
            return ngettext("%(num)d 分钟后", "%(num)d 分钟后", n)
        return ngettext("%(num)d 分钟前", "%(num)d 分钟前", n)
    if seconds < 86400:
        n = int(seconds // 3600)
        if future:
            return ngettext("%(num)d 小时后", "%(num)d 小时后", n)
        return ngettext("%(num)d 小时前", "%(num)d 小时前", n)
    n = int(seconds // 86400)
    if future:
        return ngettext("%(num)d 天后", "%(num)d 天后", n)
    return ngettext("%(num)d 天前", "%(num)d 天前", n)


# (endpoint, label, icon, shown in the phone's bottom bar). Items whose feature is not installed are hidden.
NAV = [
    ("main.home", _l("工作台"), "inbox", True, Role.REP),
    ("pool.index", _l("公海"), "pool", True, Role.REP),
    ("customers.index", _l("客户"), "users", True, Role.REP),
    ("intake.new", _l("新建"), "plus", True, Role.REP),
    ("pipeline.board", _l("商机"), "funnel", True, Role.REP),
    ("reports.dashboard", _l("看板"), "chart", False, Role.MANAGER),
    ("admin.index", _l("管理"), "gear", False, Role.ADMIN),
]


def nav_items() -> list[dict]:
    """The navigation for the signed-in user: bottom bar on phones, side bar on laptops."""
    if not current_user.is_authenticated:
        return []
    from flask import current_app, url_for

    items = []
    for endpoint, label, icon_name, primary, role in NAV:
        if endpoint not in current_app.view_functions or not current_user.has_role(role):
            continue
        section = endpoint.split(".")[0]
        items.append(
            {
                "url": url_for(endpoint),
                "label": str(label),
                "icon": icon_name,
                "primary": primary,
                "active": request.endpoint == endpoint
                or (section != "main" and request.blueprint == section),
            }
        )
    return items


ICONS = {
    "inbox": '<path d="M3 13h5l2 3h4l2-3h5M5 5h14l2 8v6H3v-6z"/>',
    "pool": '<path d="M2 16c3 0 3-2 6-2s3 2 6 2 3-2 6-2M2 20c3 0 3-2 6-2s3 2 6 2 3-2 6-2M12 3v8M8 7l4-4 4 4"/>',
    "users": '<circle cx="9" cy="8" r="4"/><path d="M2 21c0-4 3-6 7-6s7 2 7 6M16 4a4 4 0 0 1 0 8M18 15c2 1 4 3 4 6"/>',
    "plus": '<circle cx="12" cy="12" r="9"/><path d="M12 8v8M8 12h8"/>',
    "team": '<path d="M4 20V10M10 20V4M16 20v-7M22 20H2"/>',
    "gear": '<circle cx="12" cy="12" r="3"/><path d="M12 2v3M12 19v3M2 12h3M19 12h3M5 5l2 2M17 17l2 2M5 19l2-2M17 7l2-2"/>',
    "chart": '<path d="M4 20V10M10 20V4M16 20v-7M22 20H2"/>',
    "funnel": '<path d="M3 4h18l-7 8v6l-4 2v-8z"/>',
    "bell": '<path d="M6 16V11a6 6 0 0 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0"/>',
}


def icon(name: str) -> Markup:
    body = ICONS.get(name, "")
    return Markup(
        '<svg class="icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" '
        f'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">{body}</svg>'
    )


def admin_nav() -> list[tuple[str, str]]:
    from flask import current_app

    from crm.admin import ADMIN_NAV

    return [(endpoint, str(label)) for endpoint, label in ADMIN_NAV if endpoint in current_app.view_functions]


def install_input_guards(app: Flask) -> None:
    """Hooks that must run before the extensions read the request (call before ``csrf.init_app``)."""
    from crm import inputguard

    inputguard.install(app)
    app.before_request(_reject_non_utf8_forms)


class _Macro:
    """A macro of ``_macros.html`` exposed as a Jinja global, so a block rendered alone for htmx
    (jinja2-fragments skips the template's top-level imports) can still call it."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        from flask import current_app

        module = current_app.jinja_env.get_template("_macros.html").module
        return getattr(module, self.name)(*args, **kwargs)


def _macro_globals(app: Flask) -> dict:
    import re
    from pathlib import Path

    source = (Path(app.root_path) / "templates" / "_macros.html").read_text(encoding="utf-8")
    return {name: _Macro(name) for name in re.findall(r"{%-?\s*macro\s+(\w+)", source)}


def install_web_hooks(app: Flask) -> None:
    app.after_request(_headers)
    app.jinja_env.filters["dt"] = fmt_dt
    app.jinja_env.filters["relative"] = fmt_relative
    app.jinja_env.globals.update(_macro_globals(app))
    app.jinja_env.globals.update(
        nav_items=nav_items, icon=icon, Role=Role, clock=clock, get_locale=get_locale, admin_nav=admin_nav
    )
