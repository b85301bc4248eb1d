"""Bounds on what a request may carry, enforced once for every route (web and API).

- ``<int:…>`` path ids outside the database's integer range do not match (404), instead of an overflow
  error deep in a query;
- ``request.args.get(…, type=int)`` treats an out-of-range number as invalid (the default is used);
- JSON bodies are bounded in size (413) and nesting depth (400), checked without recursion;
- text: ``clean_line`` / ``clean_text`` drop control characters (CR, LF, NUL, other C0/C1) from single-line
  and multi-line values; the shared form base class (``crm.forms.FlaskForm``) applies them to every field.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Request, request
from flask.json.provider import DefaultJSONProvider
from flask_babel import gettext as _
from werkzeug.datastructures import CombinedMultiDict, ImmutableMultiDict, MultiDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter
from werkzeug.utils import cached_property

# Ids are INTEGER columns: PostgreSQL's 32-bit range is the narrowest of the supported databases.
DB_INT_MIN = -(2**31)
DB_INT_MAX = 2**31 - 1
JSON_MAX_BYTES = 1024 * 1024
JSON_MAX_DEPTH = 32

# C0 controls except TAB/LF/CR, DEL and C1 controls; lines additionally lose TAB, LF and CR.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile("[\t\r\n\u2028\u2029\x85]+")


YEAR_MIN, YEAR_MAX = 2000, 2100


def year_arg(name: str = "year") -> int | None:
    """The ``?year=`` query parameter: None when absent, else a year in 2000–2100 (400 otherwise)."""
    from flask import abort

    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or not YEAR_MIN <= int(raw) <= YEAR_MAX:
        abort(400, _("年份必须是 %(lo)s–%(hi)s 之间的整数。", lo=YEAR_MIN, hi=YEAR_MAX))
    return int(raw)


def in_db_range(value: int) -> bool:
    return DB_INT_MIN <= value <= DB_INT_MAX


def parse_id(value: Any) -> int | None:
    """An id from untrusted input: a positive integer within the database's range, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    if isinstance(value, int) and 0 < value <= DB_INT_MAX:
        return value
    return None


def clean_line(value: Any) -> Any:
    """A single-line value: line breaks and tabs become one space, other control characters go."""
    if not isinstance(value, str):
        return value
    return _CONTROL.sub("", _LINE_BREAKS.sub(" ", value))


def clean_text(value: Any) -> Any:
    """A multi-line value: keeps tabs and line breaks (as ``\\n``), drops other control characters."""
    if not isinstance(value, str):
        return value
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


class BoundedIntConverter(IntegerConverter):
    """``<int:…>`` limited to the database's integer range: a larger id matches no route (404)."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = None,
                 signed: bool = False):  # fmt: skip
        super().__init__(
            map,
            fixed_digits,
            DB_INT_MIN if min is None and signed else (0 if min is None else min),
            DB_INT_MAX if max is None else max,
            signed,
        )


class _BoundedGet:
    """``get(key, type=int)`` answers the default for a number outside the database's integer range."""

    def get(self, key, default=None, type=None):  # noqa: A002 (werkzeug's signature)
        value = super().get(key, default, type)
        if type is int and isinstance(value, int) and value is not default and not in_db_range(value):
            return default
        return value


class BoundedArgs(_BoundedGet, ImmutableMultiDict):
    """Query and form values, control characters dropped (``clean_text``; forms also make single-line
    fields single-line), with the bounded ``get(…, type=int)``."""

    def __init__(self, mapping=None):
        if mapping is None:
            super().__init__()
            return
        if isinstance(mapping, MultiDict):
            mapping = mapping.items(multi=True)
        elif isinstance(mapping, dict):
            mapping = {k: [clean_text(v) for v in vs] if isinstance(vs, list | tuple) else clean_text(vs)
                       for k, vs in mapping.items()}  # fmt: skip
            super().__init__(mapping)
            return
        super().__init__([(clean_text(k), clean_text(v)) for k, v in mapping])


class BoundedCombined(_BoundedGet, CombinedMultiDict):
    pass


class GuardedRequest(Request):
    parameter_storage_class = BoundedArgs

    @cached_property
    def values(self) -> CombinedMultiDict:
        args = [self.args] + ([self.form] if self.method != "GET" else [])
        return BoundedCombined(args)


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def json_depth_exceeds(text: str, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit`` (strings skipped), without recursion."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def clean_strings(value: Any) -> Any:
    """``value`` (parsed JSON) with control characters dropped from every string, keys included
    (``clean_text``: line breaks and tabs stay; forms make single-line fields single-line)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_strings(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_strings(v) for k, v in value.items()}
    return value


class GuardedJSONProvider(DefaultJSONProvider):
    """Refuses JSON nested deeper than ``JSON_MAX_DEPTH`` (400) before the recursive parser sees it, and
    drops control characters (NUL: PostgreSQL refuses it in text) from the strings it parsed."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        text = s.decode("utf-8", "replace") if isinstance(s, bytes | bytearray) else s
        if json_depth_exceeds(text):
            raise BadRequest(_("JSON 嵌套层数过深(最多 %(n)s 层)。", n=JSON_MAX_DEPTH))
        return clean_strings(super().loads(s, **kwargs))


def _bound_json_body() -> None:
    """A JSON body larger than ``JSON_MAX_BYTES`` is refused (413) before anything reads it."""
    if request.method in ("GET", "HEAD", "OPTIONS") or not request.is_json:
        return
    from flask import current_app

    limit = current_app.config.get("JSON_MAX_BYTES", JSON_MAX_BYTES)
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge(_("JSON 请求体太大(最多 %(kb)s KB)。", kb=limit // 1024))
    if length is None:  # chunked: read at most one byte past the limit
        data = request.stream.read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge(_("JSON 请求体太大(最多 %(kb)s KB)。", kb=limit // 1024))
        request._cached_data = data  # noqa: SLF001 (what get_data would have cached)


def _refuse_control_characters_in_paths() -> None:
    """A path parameter carrying control characters (``/f/a%00b``) names nothing: 404, before any
    query sees it (PostgreSQL refuses NUL in text)."""
    if any(isinstance(v, str) and _CONTROL.search(v) for v in (request.view_args or {}).values()):
        from flask import abort

        abort(404)


def install(app: Flask) -> None:
    """Call before blueprints are registered (the ``int`` converter is looked up when rules are added)."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.request_class = GuardedRequest
    app.json = GuardedJSONProvider(app)
    app.before_request(_refuse_control_characters_in_paths)
    app.before_request(_bound_json_body)
