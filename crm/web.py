"""Request hooks and template helpers shared by every page."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Flask, abort, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup
from werkzeug.middleware.proxy_fix import ProxyFix

from crm import clock
from crm.models import Role
from crm.urls import is_safe_local, safe_next

logger = logging.getLogger(__name__)


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


# No inline script, no eval (htmx runs with allowEval off), nothing loaded from elsewhere. Inline style
# *attributes* stay allowed (style-src-attr: a few computed widths); <style> elements do not.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'self'; "
    "object-src 'none'"
)
HSTS = "max-age=31536000"


def client_ip() -> str:
    """The client's address: the peer, or the one trusted proxies report (``CRM_TRUSTED_PROXIES``)."""
    return request.remote_addr or "unknown"


def _headers(response):
    if response.mimetype == "text/html":
        response.vary.add("HX-Request")
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    embeddable = request.path.startswith("/f/")  # public lead forms may be embedded in an iframe
    if not embeddable:
        response.headers.setdefault("X-Frame-Options", "DENY")
    # Public lead forms are framed by any customer site (and by pages Chromium counts as opaque origins,
    # which even ``frame-ancestors *`` refuses): no frame-ancestors for them.
    response.headers.setdefault(
        "Content-Security-Policy", CSP if embeddable else CSP + "; frame-ancestors 'none'"
    )
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    for header in ("Location", "HX-Redirect"):
        target = response.headers.get(header)
        if target is not None and not is_safe_local(target) and not _own_absolute(target):
            # Every redirect of the app is a local path (crm.urls); anything else is a bug or an attack.
            logger.warning("refused unsafe %s %r from %s", header, target, request.endpoint)
            response.headers[header] = safe_next(None)
    return response


def _own_absolute(target: str) -> bool:
    """Werkzeug's own redirects (a missing trailing slash) are absolute URLs of this very host."""
    parts = urlsplit(target)
    return (
        parts.scheme in ("http", "https")
        and parts.netloc == request.host
        and is_safe_local(parts.path or "/")
    )


def _secure_cookies(response):
    """Behind https (directly or through a trusted proxy) every cookie we set is ``Secure``.

    Registered before Flask-Login so it runs after the remember-me cookie is set; the session cookie is
    written later still, by ``HttpsAwareSessionInterface``."""
    if request.is_secure:
        cookies = response.headers.getlist("Set-Cookie")
        if any("; secure" not in c.lower() for c in cookies):
            response.headers.remove("Set-Cookie")
            for cookie in cookies:
                response.headers.add(
                    "Set-Cookie", cookie if "; secure" in cookie.lower() else cookie + "; Secure"
                )
    return response


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """The session cookie is ``Secure`` whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or (has_request_context() and request.is_secure))


def install_proxy_fix(app: Flask) -> None:
    """Trust ``X-Forwarded-For/-Proto/-Host`` from ``CRM_TRUSTED_PROXIES`` proxies in front of the app (0 =
    none: the headers are ignored, as anyone can send them)."""
    hops = int(app.config.get("CRM_TRUSTED_PROXIES") or 0)
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


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


# (endpoint, label, icon, shown in the phone's bottom bar, least role). Items whose feature is not installed
# are hidden. Managers' bottom bar trades 新建 (still in the avatar menu) for 审批 and 看板.
NAV = [
    ("main.home", _l("工作台"), "inbox", True, Role.REP),
    ("pool.index", _l("公海"), "pool", True, Role.REP),
    ("customers.index", _l("客户"), "users", True, Role.REP),
    ("intake.new", _l("新建"), "plus", True, Role.REP),
    ("pipeline.board", _l("商机"), "funnel", True, Role.REP),
    ("approvals.index", _l("审批"), "check", True, Role.MANAGER),
    ("reports.dashboard", _l("看板"), "chart", True, Role.MANAGER),
    ("admin.index", _l("管理"), "gear", False, Role.ADMIN),
]
NOT_PRIMARY_FOR_MANAGERS = {"intake.new"}


def nav_items() -> list[dict]:
    """The navigation for the signed-in user: bottom bar on phones, side bar on laptops (cached per request:
    the layout asks three times). The 审批 entry carries the count of what waits on the manager."""
    if not current_user.is_authenticated:
        return []
    from flask import current_app, g, url_for

    if "nav_items" in g:
        return g.nav_items
    items = []
    for endpoint, label, icon_name, primary, role in NAV:
        if endpoint not in current_app.view_functions or not current_user.has_role(role):
            continue
        if current_user.is_manager and endpoint in NOT_PRIMARY_FOR_MANAGERS:
            primary = False
        section = endpoint.split(".")[0]
        badge = 0
        if endpoint == "approvals.index":
            from crm.approvals.routes import badge_counts

            badge = badge_counts().total
        items.append(
            {
                "url": url_for(endpoint),
                "label": str(label),
                "icon": icon_name,
                "primary": primary,
                "badge": badge,
                "active": request.endpoint == endpoint
                or (section != "main" and request.blueprint == section),
            }
        )
    g.nav_items = items
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
    "check": '<path d="M9 11l3 3 8-8"/><path d="M20 12v7a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h11"/>',
    "phone": '<path d="M5 3h4l2 5-3 2a11 11 0 0 0 6 6l2-3 5 2v4a2 2 0 0 1-2 2A17 17 0 0 1 3 5a2 2 0 0 1 2-2z"/>',
    "chat": '<path d="M4 5h16v11H9l-5 4z"/>',
    "clock": '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
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
    """Hooks that must run before the extensions read the request (call before ``csrf.init_app``), and
    the ones that must see the response after them (``after_request`` hooks run in reverse order)."""
    from crm import inputguard

    inputguard.install(app)
    app.before_request(_reject_non_utf8_forms)
    app.after_request(_secure_cookies)
    app.session_interface = HttpsAwareSessionInterface()
    install_proxy_fix(app)


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
