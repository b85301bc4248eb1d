"""Static assets for phones on slow networks: compressed responses (Flask-Compress: zstd / brotli / gzip),
static URLs that carry a content hash (``/static/app.css?v=3f2a…``) served with a year-long immutable
cache, and the icons browsers ask for (``/favicon.ico``, the touch icon)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Flask, current_app, request, send_from_directory
from flask_compress import Compress

from crm.access import access

compress = Compress()
YEAR = 365 * 24 * 3600


@cache
def _digest(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def static_version(filename: str) -> str | None:
    """The first 12 hex digits of the file's SHA-256 (recomputed when the file changes), or None."""
    path = Path(current_app.static_folder) / filename
    try:
        return _digest(str(path), path.stat().st_mtime_ns)
    except OSError:
        return None


def _version_static_urls(endpoint: str, values: dict) -> None:
    """``url_for('static', filename=…)`` everywhere gets ``?v=<hash>``: a changed file is a new URL."""
    if endpoint == "static" and "v" not in values and values.get("filename"):
        version = static_version(values["filename"])
        if version:
            values["v"] = version


def _cache_static(response):
    """A versioned static URL never changes content: cache it for a year without revalidation."""
    if request.endpoint == "static" and response.status_code == 200:
        version = request.args.get("v")
        if version and version == static_version(request.view_args.get("filename", "")):
            response.cache_control.public = True
            response.cache_control.max_age = YEAR
            response.cache_control.immutable = True
            response.cache_control.no_cache = None
        else:
            response.cache_control.no_cache = True
    return response


@access(None)
def favicon():
    """``/favicon.ico`` (browsers ask for it on every site): the app icon."""
    response = send_from_directory(current_app.static_folder, "icon-180.png", mimetype="image/png")
    response.cache_control.public = True
    response.cache_control.max_age = 7 * 24 * 3600
    return response


def install_assets(app: Flask) -> None:
    app.config.setdefault("COMPRESS_MIMETYPES", [
        "text/html", "text/css", "text/javascript", "application/javascript", "application/json",
        "text/csv", "text/calendar", "image/svg+xml",
    ])  # fmt: skip
    app.config.setdefault("COMPRESS_MIN_SIZE", 500)
    compress.init_app(app)
    app.url_defaults(_version_static_urls)
    app.after_request(_cache_static)
    app.add_url_rule("/favicon.ico", "favicon", favicon)
