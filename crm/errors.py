"""Error pages in the app layout, and JSON errors ``{"error", "message"}`` under ``/api/``."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

MESSAGES = {
    400: ("bad_request", _l("请求无效。")),
    401: ("unauthorized", _l("请先登录。")),
    403: ("forbidden", _l("你没有权限执行此操作。")),
    404: ("not_found", _l("找不到这个页面或记录。")),
    405: ("method_not_allowed", _l("不支持此请求方法。")),
    409: ("conflict", _l("操作冲突,请刷新后重试。")),
    413: ("too_large", _l("上传的内容太大。")),
    422: ("invalid", _l("提交的内容有误。")),
    429: ("too_many_requests", _l("请求过于频繁,请稍后再试。")),
    500: ("server_error", _l("服务器出错了,我们已记录,请稍后再试。")),
}


def error_response(status: int, message: str | None = None, code: str | None = None):
    default_code, default_message = MESSAGES.get(status, ("error", _l("出错了。")))
    message = message or str(default_message)
    if request.path.startswith("/api/"):
        return jsonify(error=code or default_code, message=message), status
    template = "errors/error.html"
    if request.headers.get("HX-Request") == "true":
        # htmx shows failures in a toast (see app.js); keep the body short.
        return render_template("errors/_toast.html", status=status, message=message), status
    return render_template(template, status=status, message=message), status


def install_error_handlers(app: Flask) -> None:
    from crm.api.core import ApiError

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        # Also registered on the API blueprint; this one covers API views added to the app directly.
        return jsonify(error=exc.code, message=exc.message, **exc.extra), exc.status

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(400, _("页面已过期或缺少安全令牌 (CSRF),请刷新页面后重试。"), "csrf")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        description = None
        # Messages given explicitly with abort(status, "…") are shown; werkzeug's English defaults are not.
        if exc.description and exc.description != type(exc).description:
            description = exc.description
        return error_response(status, description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        from crm.extensions import db

        db.session.rollback()
        return error_response(500)
