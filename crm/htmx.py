"""htmx helpers: one route renders the whole page, or only the named block for an htmx request."""

from __future__ import annotations

import json

from flask import Response, make_response, render_template, request
from jinja2_fragments.flask import render_block

from crm.urls import safe_next


def is_htmx() -> bool:
    """True for an htmx request that wants a fragment (not a history restore, which needs the page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def render(template: str, block: str | None = None, status: int = 200, **context) -> Response:
    """Render ``template`` whole, or just ``block`` when htmx asked; always ``Vary: HX-Request``."""
    if block and is_htmx():
        body = render_block(template, block, **context)
    else:
        body = render_template(template, **context)
    response = make_response(body, status)
    response.vary.add("HX-Request")
    return response


def render_fragment(template: str, block: str, status: int = 200, **context) -> Response:
    """Render only ``block`` of ``template`` whatever the request (for fragment-only endpoints)."""
    response = make_response(render_block(template, block, **context), status)
    response.vary.add("HX-Request")
    return response


def trigger(response: Response, event: str, detail: object = True) -> Response:
    """Add an event to the ``HX-Trigger`` header so other parts of the page refresh themselves."""
    current = response.headers.get("HX-Trigger")
    events = json.loads(current) if current else {}
    events[event] = detail
    # ASCII-only: HTTP headers are latin-1 (Chinese toasts are sent as \u escapes, which htmx decodes).
    response.headers["HX-Trigger"] = json.dumps(events, ensure_ascii=True)
    return response


def toast(response: Response, message: str, level: str = "info", undo: dict | None = None) -> Response:
    """Show a small toast message in the browser (handled by ``app.js``); ``undo`` = ``{"url", "label"}``
    adds a 撤销 button that POSTs to ``url`` while the toast shows."""
    detail = {"message": message, "level": level}
    if undo:
        detail["undo"] = undo
    return trigger(response, "crm:toast", detail)


def redirect_htmx(url: str) -> Response:
    """A full-page navigation that works for htmx (``HX-Redirect``) and plain requests alike; only to a
    local path of this site (``crm.urls.safe_next``)."""
    url = safe_next(url)
    if is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url
        return response
    response = make_response("", 303)
    response.headers["Location"] = url
    return response
