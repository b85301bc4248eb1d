"""The API blueprint and what every endpoint shares: errors, body parsing, scopes, OpenAPI notes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, g, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from crm.extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

# endpoint name → {"summary", "body", "responses", "scope", ...}; read by the OpenAPI builder.
DOCS: dict[str, dict] = {}


class ApiError(Exception):
    """Raise anywhere under the API to answer ``{"error": code, "message": …}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(error=exc.code, message=exc.message, **exc.extra), exc.status


def doc(
    summary: str,
    *,
    body: type | dict | None = None,
    query: dict | None = None,
    responses: dict[int, str] | None = None,
    scope: str = "read",
) -> Callable:
    """Describe an endpoint for ``/api/v1/openapi.json`` and require a token scope.

    ``body`` is a WTForms form class (its fields become the schema) or a JSON schema dict.
    """

    def decorate(view: Callable) -> Callable:
        view.api_doc = {"summary": summary, "body": body, "query": query or {}, "responses": responses or {}}
        view.api_scope = scope
        return view

    return decorate


@bp.before_request
def _require_scope():
    """Tokens carry scopes: ``read``, ``write``, ``leads`` (intake only), ``admin``."""
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint or "")
    needed = getattr(view, "api_scope", None)
    token = g.get("api_token")
    if needed is None or token is None or not current_user.is_authenticated:
        return None
    scopes = set(token.scopes.split())
    # "write" implies "read" and "leads"; "admin" implies all of them.
    implied = {
        "read": {"read", "write", "admin"},
        "write": {"write", "admin"},
        "leads": {"leads", "write", "admin"},
    }
    if scopes & implied.get(needed, {needed}):
        return None
    raise ApiError(403, "insufficient_scope", _("此令牌没有 %(scope)s 权限。", scope=needed))


def leads_only_token() -> bool:
    """Whether the request comes with a token limited to ``leads`` (no read/write/admin): such a token
    feeds leads and events but learns nothing about the customers already there."""
    token = g.get("api_token")
    return token is not None and not set(token.scopes.split()) & {"read", "write", "admin"}


def json_body() -> dict:
    """The request's JSON object, or a 400 ``malformed_json`` error."""
    if not request.is_json:
        raise ApiError(
            415 if request.data else 400,
            "malformed_json",
            _("请求体必须是 JSON (Content-Type: application/json)。"),
        )
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_json", _("请求体不是有效的 JSON 对象。"))
    return payload


def _form_value(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool):
        return ["y"] if value else []
    if isinstance(value, list):
        return [v for item in value for v in _form_value(item)]
    if isinstance(value, dict):
        raise ApiError(422, "invalid", _("字段不能是对象。"))
    return [str(value)]


def form_from_json(form_class: type, payload: dict, prepare: Callable | None = None, **kwargs: Any):
    """Validate a JSON payload with the same WTForms form the web UI uses; 422 with field errors.
    ``prepare(form)`` runs before validation (choices read from the database, as the web page sets them)."""
    data = MultiDict()
    for key, value in payload.items():
        for item in _form_value(value):
            data.add(key, item)
    form = form_class(formdata=data, meta={"csrf": False}, **kwargs)
    if prepare is not None:
        prepare(form)
    if not form.validate():
        errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
        first = next(iter(errors.values()))[0] if errors else _("提交的内容有误。")
        raise ApiError(422, "invalid", first, fields=errors)
    return form


def get_or_404(model, object_id: int, message: str | None = None):
    from crm.extensions import db

    obj = db.session.get(model, object_id)
    if obj is None:
        raise ApiError(404, "not_found", message or _("找不到该记录。"))
    return obj


def jsonable(value: Any) -> Any:
    """datetimes as ISO 8601 with offset, decimals as strings-free numbers."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def require_admin() -> None:
    if not current_user.is_admin:
        abort(403)
