"""Who may use each route. Every view declares it with ``@access(...)``; undeclared views refuse to start.

``access(None)`` is public; ``access(Role.REP)`` any signed-in active user; ``access(Role.MANAGER)``
managers and admins; ``access(Role.ADMIN)`` admins only. Object-level rules (a rep sees their own
customers, a pool admin edits their pool) are checked again in the services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, abort, current_app, jsonify, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from crm.models import Role

F = TypeVar("F", bound=Callable)
PUBLIC = None
_UNSET = object()


def access(role: str | None) -> Callable[[F], F]:
    """Declare the least role that may use a view (``None`` for public)."""
    if role is not None and role not in Role.ALL:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view: F) -> F:
        view.access_role = role  # type: ignore[attr-defined]
        return view

    return decorate


def declared_role(view: Callable) -> object:
    return getattr(view, "access_role", _UNSET)


def check_declarations(app: Flask) -> None:
    """Fail at start-up if any view forgot to say who may use it."""
    missing = [
        endpoint
        for endpoint, view in app.view_functions.items()
        if endpoint != "static" and declared_role(view) is _UNSET
    ]
    if missing:
        raise RuntimeError(f"views without an @access declaration: {', '.join(sorted(missing))}")


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def deny_unauthenticated():
    """The answer to a signed-out visitor: 401 JSON for the API, the login page otherwise."""
    if is_api_request():
        return jsonify(error="unauthorized", message=_("需要有效的 API 令牌 (Authorization: Bearer …)")), 401
    login_url = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
    if request.headers.get("HX-Request") == "true":
        resp = current_app.response_class(status=401)
        resp.headers["HX-Redirect"] = login_url
        return resp
    return redirect(login_url)


def enforce() -> object | None:
    """``before_request`` hook: apply the declared role of the matched view."""
    if request.endpoint is None or request.endpoint == "static":
        return None
    view = current_app.view_functions.get(request.endpoint)
    role = declared_role(view)
    if role is PUBLIC:
        return None
    if not current_user.is_authenticated:
        return deny_unauthenticated()
    if not current_user.has_role(role):  # type: ignore[arg-type]
        abort(403)
    return None
