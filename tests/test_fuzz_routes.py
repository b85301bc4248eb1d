"""Route fuzzer: every registered route (web and API), as anonymous, rep, manager and admin (bearer tokens
under ``/api``, plus a ``leads``-only token), with every path, query, form and JSON parameter set to each
value of a corpus of bad input — never a 500, and never the script payload echoed unescaped in HTML.

Parameters are discovered, not listed by hand: path parameters from the URL rules; query names from the
source (``request.args.get("…")`` anywhere in ``crm``) and the fields of the forms each view uses; form
fields from the WTForms classes a view (or the helper it calls) instantiates, with their prefixes, and
the names in the pages' HTML forms; JSON fields from the API's documented body forms and the keys the
endpoint reads. Each request sets all of a route's parameters to one bad value at once; every route ×
role is tried with every value class. The counts are printed (``pytest -s``) for the issue's report.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

from crm.access import access
from crm.extensions import db
from crm.models import WebhookEndpoint
from tests.conftest import login

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "<script>alert(1)</script>"

# Text values for path segments, query strings and form fields: (class, value).
TEXT_VALUES = [
    ("huge_int", "99999999999999999999"),
    ("int32_overflow", "2147483648"),
    ("negative", "-1"),
    ("zero", "0"),
    ("nul", "a\x00b"),
    ("crlf", "x\r\nBcc: victim@example.com"),
    ("long", "x" * 10_000),
    ("script", SCRIPT),
    ("template", "{{7*7}}{% raw %}"),
    ("sql", "' OR 1=1--"),
    ("float", "1e400"),
    ("date", "9999-99-99T99:99"),
]
# Extra JSON values (wrong types, nesting); the text values are sent as JSON strings and numbers too.
JSON_VALUES = [
    ("json_huge_int", 10**20),
    ("json_negative", -(2**63) - 1),
    ("json_float", 1e308),
    ("json_bool", True),
    ("json_null", None),
    ("json_list", [1, "a", None]),
    ("json_object", {"a": {"b": [1]}}),
    ("json_nested", json.loads("[" * 30 + "]" * 30)),
]
# Raw bodies: not UTF-8, too deep for any parser, truncated.
RAW_BODIES = [
    ("non_utf8_json", b'{"name": "\xff\xfe"}', "application/json"),
    ("deep_json", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("broken_json", b'{"name": ', "application/json"),
    ("non_utf8_form", b"name=%ff%fe&title=\xff\xfe", "application/x-www-form-urlencoded"),
]
PATH_INT_VALUES = [("huge_int", "99999999999999999999"), ("int32_overflow", "2147483648"), ("zero", "0")]
GENERIC_NAMES = ("q", "page", "sort", "id", "name", "title", "customer_id", "pool_id", "user_id", "year",
                 "date", "next", "phone", "email")  # fmt: skip


# ---------------------------------------------------------------- discovery


def _all_form_classes():
    from crm.forms import FlaskForm, Form

    seen, todo = {}, [FlaskForm, Form]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__name__ not in seen:
                seen[sub.__name__] = sub
                todo.append(sub)
    return seen


def _field_names(form_cls, prefix: str = "") -> set[str]:
    from wtforms.fields import FieldList, FormField

    names = set()
    for name, unbound in inspect.getmembers(form_cls, lambda m: hasattr(m, "field_class")):
        full = f"{prefix}-{name}" if prefix else name
        if issubclass(unbound.field_class, FieldList | FormField):
            names |= {f"{full}-0", f"{full}-0-id", f"{full}-0-kind", f"{full}-0-days"}
        names.add(full)
    return names


_ARGS = re.compile(r"""(?:args|values|form)\.(?:get|getlist)\(\s*["']([a-zA-Z_][\w-]*)["']""")
_JSON_KEYS = re.compile(r"""(?:payload|data|body|item|entry|raw)(?:\.get\(|\[)\s*["']([a-zA-Z_]\w*)["']""")
_FORM_USE = re.compile(r"\b([A-Z]\w*Form)\(([^()]*(?:\([^()]*\))?[^()]*)\)")
_PREFIX = re.compile(r"""prefix=["'](\w+)["']""")
_CALLS = re.compile(r"\b(_?[a-z]\w*)\(")


def _view_sources(view) -> list[str]:
    """The view's source and that of the module-level functions it calls (one level)."""
    view = inspect.unwrap(view)
    try:
        source = inspect.getsource(view)
    except (OSError, TypeError):
        return []
    module = sys.modules.get(view.__module__)
    sources = [source]
    for name in set(_CALLS.findall(source)):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == view.__module__ and helper is not view:
            with contextlib.suppress(OSError):
                sources.append(inspect.getsource(helper))
    return sources


class Discovery:
    def __init__(self, app):
        self.forms = _all_form_classes()
        source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "crm").rglob("*.py"))
        self.query_names = set(_ARGS.findall(source)) | set(GENERIC_NAMES)
        self.html_names: set[str] = set()
        self.app = app

    def view_args(self, endpoint: str) -> set[str]:
        """Query names the view (or a helper it calls, or a filter parser) reads; all of them if its
        source reads the query as a whole (``request.args`` handed to a parser)."""
        names = set()
        for source in _view_sources(self.app.view_functions[endpoint]):
            names |= set(_ARGS.findall(source))
            if re.search(r"request\.(args|values)\b(?!\.get)", source):
                names |= self.query_names
        return names

    def view_fields(self, endpoint: str) -> tuple[set[str], set[str]]:
        """(form field names, JSON keys) a view reads."""
        view = self.app.view_functions[endpoint]
        fields, keys = set(), set()
        doc = getattr(view, "api_doc", None)
        if doc and isinstance(doc.get("body"), type):
            fields |= _field_names(doc["body"])
        elif doc and isinstance(doc.get("body"), dict):
            keys |= set((doc["body"].get("properties") or {}).keys())
        for source in _view_sources(view):
            for name, call in _FORM_USE.findall(source):
                cls = self.forms.get(name)
                if cls is not None:
                    prefix = _PREFIX.search(call)
                    fields |= _field_names(cls, prefix.group(1) if prefix else "")
            fields |= set(_ARGS.findall(source))
            keys |= set(_JSON_KEYS.findall(source))
        return fields, keys | fields


# ---------------------------------------------------------------- the world and the clients


def _world(make, rep, manager, admin):
    """One row in each table a path id points at (ids 1), owned so every role reaches some of them."""
    from crm import clock

    pool = make.pool("华东公海", members=[rep, manager], admins=[admin])
    make.customer(pool, owner=rep, name="星河科技")
    customer = make.customer(pool, name="云帆贸易")
    make.contact(customer)
    make.followup(customer, rep)
    make.reminder(rep, customer=customer, title="回访")
    make.lead_form(pool, slug="site")
    make.conflict(customer, customer)
    db.session.add(WebhookEndpoint(kind="webhook", name="hook", url="http://127.0.0.1:9/hook", enabled=True,
                                   extra={}, created_at=clock.now()))  # fmt: skip
    db.session.commit()
    return pool


def _url(rule, path_values: dict) -> str:
    from werkzeug.routing import IntegerConverter

    url = rule.rule
    for name, conv in rule._converters.items():
        value = path_values.get(name, "1" if isinstance(conv, IntegerConverter) else "fuzz")
        url = re.sub(rf"<(?:[^:<>]+:)?{name}>", quote(str(value), safe=""), url)
    return url


class _LastError(logging.Handler):
    """Keeps the last exception the app's error handler logged (to say what a 500 was)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record):
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            tb, where = record.exc_info[2], "?"
            while tb is not None:  # the deepest frame in the app's own code
                path = Path(tb.tb_frame.f_code.co_filename)
                if "crm" in path.parts and "site-packages" not in path.parts:
                    where = f"{path.parent.name}/{path.name}:{tb.tb_lineno}"
                tb = tb.tb_next
            self.last = f"{type(exc).__name__} at {where}: {str(exc)[:160]}"


class Fuzzer:
    def __init__(self, app, discovery: Discovery, clients: dict):
        self.app, self.d, self.clients = app, discovery, clients
        self.failures: list[str] = []
        self.requests = 0
        self.tried: Counter = Counter()
        self.stale: dict[str, bool] = {}
        self.errors = _LastError()
        logging.getLogger("crm.errors").addHandler(self.errors)
        logging.getLogger("crm.errors").propagate = False

    def send(self, role: str, method: str, url: str, *, what: str, **kwargs) -> None:
        client, headers, user = self.clients[role]
        if user is not None and (method != "GET" or self.stale.pop(role, False)):
            # Before any write (and once per route): a fuzzed /logout or password change must not end
            # the requests that follow.
            login(client, user)
        self.requests += 1
        try:
            response = client.open(url, method=method, headers=headers, **kwargs)
        except Exception as exc:  # noqa: BLE001 (a crash is a finding, like a 500)
            self.failures.append(f"{role} {method} {url[:120]} [{what}]: {type(exc).__name__}: {exc}"[:400])
            db.session.rollback()
            return
        if response.status_code == 503 and url.startswith("/readyz"):
            pass  # not ready by design here: the test schema is built without the migrations
        elif response.status_code >= 500:
            self.failures.append(
                f"{role} {method} {url[:100]} [{what}]: HTTP {response.status_code} {self.errors.last}"
            )
            self.errors.last = ""
        elif response.mimetype == "text/html" and SCRIPT.encode() in response.get_data():
            self.failures.append(f"{role} {method} {url[:120]} [{what}]: script echoed unescaped")

    def run_rule(self, rule, method: str, roles: list[str]) -> None:
        endpoint = rule.endpoint
        fields, keys = self.d.view_fields(endpoint)
        is_api = rule.rule.startswith("/api/")
        int_params = [n for n, c in rule._converters.items() if type(c).__name__ == "BoundedIntConverter"]
        text_params = [n for n in rule._converters if n not in int_params]
        query_names = self.d.view_args(endpoint) | fields | set(GENERIC_NAMES)
        body_names = fields | ({n for n in self.d.html_names} if not is_api else set())
        for role in roles:
            self.stale[role] = True
            for cls, value in PATH_INT_VALUES if int_params else []:
                self.send(role, method, _url(rule, dict.fromkeys(int_params, value)), what=f"path {cls}")
                self.tried[(rule.rule, method, role, cls)] += 1
            for cls, value in TEXT_VALUES:
                url = _url(rule, dict.fromkeys(text_params, value))
                query = "&".join(f"{quote(n)}={quote(value)}" for n in sorted(query_names))
                kwargs = {}
                if method in ("POST", "PUT", "PATCH"):
                    if is_api:
                        number = value.lstrip("-").isdigit()
                        kwargs["json"] = {k: int(value) if number else value for k in keys or GENERIC_NAMES}
                    else:
                        kwargs["data"] = {n: value for n in body_names or GENERIC_NAMES}
                self.send(role, method, f"{url}?{query}", what=cls, **kwargs)
                self.tried[(rule.rule, method, role, cls)] += 1
            if method in ("POST", "PUT", "PATCH"):
                url = _url(rule, {})
                for cls, value in JSON_VALUES if is_api else []:
                    self.send(role, method, url, what=cls, json={k: value for k in keys or GENERIC_NAMES})
                    if not isinstance(value, dict):  # the value as the whole body: a wrong top-level type
                        self.send(role, method, url, what=f"{cls} body", json=value)
                    self.tried[(rule.rule, method, role, cls)] += 1
                for cls, body, ctype in RAW_BODIES:
                    self.send(role, method, url, what=cls, data=body, content_type=ctype)
                    self.tried[(rule.rule, method, role, cls)] += 1
            elif method == "GET":
                url = _url(rule, {})
                self.send(role, method, url + "?q=%ff%fe&page=%ff", what="non_utf8_query")
                self.tried[(rule.rule, method, role, "non_utf8_query")] += 1


def _html_names(app, client, rules) -> set[str]:
    """Field names in the pages' forms (catches prefixed and hand-written inputs)."""
    names = set()
    for rule in rules:
        if "GET" in rule.methods and not rule.rule.startswith(("/api/", "/static")) and "<" not in rule.rule:
            response = client.get(rule.rule)
            if response.mimetype == "text/html":
                names |= set(re.findall(rb'name="([\w-]+)"', response.get_data()))
    return {n.decode() for n in names if n != b"csrf_token"}


def test_every_route_survives_bad_input_for_every_role(app, make, rep, manager, admin, capsys):
    _world(make, rep, manager, admin)
    rep_token = make.token(rep, "read write")
    manager_token = make.token(manager, "read write")
    admin_token = make.token(admin, "read write admin")
    leads_token = make.token(rep, "leads")
    web = {"anonymous": (app.test_client(), {}, None)}
    for name, user in (("rep", rep), ("manager", manager), ("admin", admin)):
        web[name] = (app.test_client(), {}, user)
    api = {"anonymous": (app.test_client(), {}, None)}
    for name, token in (("rep", rep_token), ("manager", manager_token), ("admin", admin_token),
                        ("leads", leads_token)):  # fmt: skip
        api[name] = (app.test_client(), {"Authorization": f"Bearer {token}"}, None)

    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    discovery = Discovery(app)
    login(web["admin"][0], admin)
    discovery.html_names = _html_names(app, web["admin"][0], rules)
    fuzzer = Fuzzer(app, discovery, {**{f"web:{k}": v for k, v in web.items()},
                                     **{f"api:{k}": v for k, v in api.items()}})  # fmt: skip
    started = time.monotonic()
    # Reads first, then writes (a fuzzed delete must not hide the routes tried after it).
    pairs = sorted(((r, m) for r in rules for m in r.methods - {"HEAD", "OPTIONS"}),
                   key=lambda p: (p[1] not in ("GET",), p[1] == "DELETE", "delete" in p[0].rule, p[0].rule))  # fmt: skip
    for rule, method in pairs:
        roles = [f"api:{k}" for k in api] if rule.rule.startswith("/api/") else [f"web:{k}" for k in web]
        fuzzer.run_rule(rule, method, roles)
    elapsed = time.monotonic() - started
    routes = {(r, m) for r, m, _role, _cls in fuzzer.tried}
    combos = {(r, m, role) for r, m, role, _cls in fuzzer.tried}
    classes = {cls for *_rest, cls in fuzzer.tried}
    with capsys.disabled():
        print(
            f"\nfuzzer: {len(routes)} route×method pairs ({len(rules)} rules) × roles = {len(combos)} "
            f"route×role combinations × {len(classes)} value classes = {len(fuzzer.tried)} cases; "
            f"{fuzzer.requests} requests in {elapsed:.0f} s; {len(fuzzer.failures)} failures"
        )
    logging.getLogger("crm.errors").removeHandler(fuzzer.errors)
    logging.getLogger("crm.errors").propagate = True
    assert not fuzzer.failures, "\n".join(fuzzer.failures[:60])


@pytest.mark.parametrize("value", ["a\x00b", "99999999999999999999", SCRIPT])
def test_fuzzer_finds_what_it_looks_for(app, value):
    """The fuzzer's checks can fail: a route that crashes on input or echoes the script is reported."""
    from flask import Blueprint

    bp = Blueprint("fuzz_probe", __name__)

    @bp.route("/_probe")
    @access(None)
    def probe():
        from flask import request

        from crm.models import Customer

        q = request.args.get("q", "")
        if q.isdigit():
            db.session.get(Customer, int(q))  # the overflow the converters prevent on real routes
        if b"%00" in request.query_string:  # the raw query: the app drops NUL from parsed values
            raise ValueError("NUL")
        return f"<html>{q}</html>"

    app.register_blueprint(bp)
    fuzzer = Fuzzer(app, Discovery(app), {"anon": (app.test_client(), {}, None)})
    fuzzer.send("anon", "GET", f"/_probe?q={quote(value)}", what="probe")
    assert fuzzer.failures
