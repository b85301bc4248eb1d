"""Logs: one line per request (and per job, from ``workers.jobs``), as text or JSON (``LOG_FORMAT=json``), with
the request id, user id and duration — and no secrets.

Secrets that travel in URLs (the calendar feed's token, ``?token=…``) are masked by ``MaskSecrets``, a
logging filter put on our request logger and on gunicorn's access logger (``gunicorn.access``), so
gunicorn's own access line is masked too without a custom ``--access-logformat``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, g, request

REQUEST_ID_HEADER = "X-Request-ID"
_CALENDAR = re.compile(r"(/calendar/)[^/?\s\"]+(\.ics)")
_QUERY = re.compile(
    r"((?:^|[?&;\s])(?:token|access_token|api_key|key|secret|password|signature)=)[^&;\s\"]*", re.I
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
request_log = logging.getLogger("crm.request")
job_log = logging.getLogger("crm.job")


def mask(text: str) -> str:
    """``text`` with URL-borne secrets replaced by ``***``."""
    if not text:
        return text
    text = _CALENDAR.sub(r"\1***\2", text)
    text = _QUERY.sub(r"\1***", text)
    return _BEARER.sub(r"\1***", text)


class MaskSecrets(logging.Filter):
    """Masks secrets in a record's message and arguments (gunicorn passes its access atoms as a dict)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask(record.msg)
        if isinstance(record.args, dict):  # in place: gunicorn's atoms dict answers "-" for missing keys
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    record.args[key] = mask(value)
        elif isinstance(record.args, tuple):
            record.args = tuple(mask(a) if isinstance(a, str) else a for a in record.args)
        return True


class RequestId(logging.Filter):
    """Gives every record logged while a request is handled that request's id (errors, warnings…)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            from flask import has_request_context

            if has_request_context() and g.get("request_id"):
                record.request_id = g.request_id
        return True


# Fields a request or job line carries besides its message (``extra=``), in the JSON output.
FIELDS = (
    "request_id",
    "user_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "job",
    "job_id",
    "outcome",
)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


JSONFormatter.converter = time.gmtime


def configure(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Root logging for our processes (web under gunicorn, worker, scheduler): text or JSON on stderr.
    A process that already set up the root logger (the worker's and scheduler's ``basicConfig``) keeps its
    handlers (no line printed twice); they only get the JSON format when asked. Gunicorn's own loggers keep
    their handlers, but its access log is masked."""
    root = logging.getLogger()
    json_lines = (fmt or "text").lower() == "json"
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, RequestId) for f in handler.filters):
            handler.addFilter(RequestId())
    if json_lines:
        for handler in root.handlers:
            handler.setFormatter(JSONFormatter())
        access = logging.getLogger("gunicorn.access")
        for handler in access.handlers:
            handler.setFormatter(JSONFormatter())
    install_mask()


def install_mask() -> None:
    for name in ("gunicorn.access", "crm.request"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskSecrets) for f in logger.filters):
            logger.addFilter(MaskSecrets())


def install_request_log(app: Flask) -> None:
    """A request id (the proxy's ``X-Request-ID`` or a new one, echoed back) and one line per request."""

    def _request_id():
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if re.fullmatch(r"[A-Za-z0-9._-]{8,64}", given) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    # First of all hooks: a request refused by an earlier hook (bad form encoding, 403) is logged too.
    app.before_request_funcs.setdefault(None, []).insert(0, _request_id)

    @app.after_request
    def _log_request(response):
        request_id = g.get("request_id")
        if request_id is None:
            return response
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        if request.endpoint == "static":
            return response
        from flask_login import current_user

        user_id = current_user.id if current_user and current_user.is_authenticated else None
        duration = (time.perf_counter() - g.request_started) * 1000
        path = mask(request.full_path.rstrip("?"))
        request_log.info(
            "%s %s %s %.1fms user=%s rid=%s", request.method, path, response.status_code, duration, user_id or "-",
            request_id,
            extra={"request_id": request_id, "user_id": user_id, "method": request.method, "path": path,
                   "route": request.url_rule.rule if request.url_rule else None, "status": response.status_code,
                   "duration_ms": round(duration, 1)},
        )  # fmt: skip
        return response


def log_job(name: str, job_id: str | None, ok: bool, duration: float, detail: str = "") -> None:
    job_log.log(
        logging.INFO if ok else logging.ERROR,
        "job %s %s %.1fms%s", name, "ok" if ok else "failed", duration * 1000, f" {detail}" if detail else "",
        extra={"job": name, "job_id": job_id, "outcome": "ok" if ok else "failed", "duration_ms": round(duration * 1000, 1)},
    )  # fmt: skip
