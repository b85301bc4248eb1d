"""Redirects go only to local paths (issue 18 #2); security headers, https cookies and trusted proxies
(issue 18 #12)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from crm import clock, create_app
from crm.extensions import db
from crm.models import Role
from crm.urls import is_safe_local, safe_next
from tests.conftest import IsolatedClient, login
from tests.factories import PASSWORD

EVIL = [
    "/\\evil.example",
    "/%5Cevil.example",
    "/%255Cevil.example",
    "//evil.example",
    "/%2F%2Fevil.example",
    "///evil.example",
    "https://evil.example/",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/\tevil",
    "/%09/evil.example",
    "/ok\r\nSet-Cookie: x=1",
    "/ok%0d%0aSet-Cookie:x=1",
    "/\x00",
    "",
    None,
    "/" + "a" * 3000,
]
GOOD = ["/", "/customers/5", "/pools/1?q=a%20b", "/reminders/new?customer_id=3&next=%2Fpools", "/f/expo"]


@pytest.mark.parametrize("target", EVIL)
def test_safe_next_refuses_anything_but_a_local_path(app, target):
    assert not is_safe_local(target)
    with app.test_request_context():
        assert safe_next(target) == "/"
        assert safe_next(target, "/pools") == "/pools"


@pytest.mark.parametrize("target", GOOD)
def test_safe_next_keeps_local_paths(app, target):
    assert is_safe_local(target)
    with app.test_request_context():
        assert safe_next(target) == target


def test_htmx_login_never_redirects_off_site(client, rep):
    """The attack: GET /login?next=/%5Cevil.example, sign in with htmx → HX-Redirect: /\\evil.example."""
    page = client.get("/login?next=/%5Cevil.example")
    assert page.status_code == 200
    resp = client.post(
        "/login?next=/%5Cevil.example",
        data={"email": rep.email, "password": PASSWORD},
        headers={"HX-Request": "true"},
    )
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == "/"
    plain = client.post("/login?next=//evil.example", data={"email": rep.email, "password": PASSWORD})
    assert plain.headers["Location"] == "/"
    # Already signed in: the GET follows next too.
    assert client.get("/login?next=/%5Cevil.example").headers["Location"] == "/"
    assert client.get("/login?next=/pools").headers["Location"] == "/pools"


def test_reminder_form_next_cannot_leave_the_site(rep_client):
    due = (clock.local(clock.now()) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    resp = rep_client.post(
        "/reminders/new",
        data={"title": "回访", "due_at": due, "next": "/\\evil.example"},
        headers={"HX-Request": "true"},
    )
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == "/"
    resp = rep_client.post("/reminders/new", data={"title": "回访", "due_at": due, "next": "/reminders"})
    assert resp.headers["Location"] == "/reminders"


def test_followup_form_next_cannot_leave_the_site(rep_client, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    due = (clock.local(clock.now()) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    page = rep_client.get(f"/customers/{customer.id}/followup?next=/%5Cevil.example")
    assert page.status_code == 200
    resp = rep_client.post(
        f"/customers/{customer.id}/followup",
        data={"channel": "phone", "content": "聊了预算", "next_plan": "发报价", "next_contact_at": due,
              "next": "/%5Cevil.example", "mode": "page"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert resp.headers["HX-Redirect"] == "/"


def test_language_switch_and_pool_forms_ignore_foreign_next(rep_client, make, rep):
    assert rep_client.post("/lang/en", data={"next": "/\\evil.example"}).headers["Location"] == "/"
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    resp = rep_client.post(f"/customers/{customer.id}/claim", data={"next": "/%5Cevil.example"})
    assert resp.status_code == 303 and not resp.headers["Location"].startswith(("//", "/\\", "http"))


def test_any_unsafe_redirect_header_is_rewritten_before_it_leaves(app, make):
    from flask import make_response

    def evil():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = "/\\evil.example"
        return response

    evil.access_role = None
    app.add_url_rule("/_test_evil", "test_evil", evil)
    resp = app.test_client().get("/_test_evil")
    assert resp.headers["HX-Redirect"] == "/"
    # Werkzeug's own redirect to this host (a missing trailing slash) is left alone.
    admin = make.user(Role.ADMIN)
    client = app.test_client()
    login(client, admin)
    slash = client.get("/admin")
    assert slash.status_code == 308 and slash.headers["Location"].endswith("/admin/")


# ---------------------------------------------------------------- 12. headers


TEMPLATES = Path(__file__).resolve().parent.parent / "crm" / "templates"


def test_templates_have_no_inline_script_handlers_or_eval_filters():
    problems = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"<script\b[^>]*>", text):
            if "src=" not in match.group(0):
                problems.append((path.name, match.group(0)))
        problems += [(path.name, m) for m in re.findall(r"\son[a-z]+\s*=", text)]
        problems += [(path.name, m) for m in re.findall(r"hx-on[:-]", text)]
        problems += [(path.name, m) for m in re.findall(r'hx-trigger="[^"]*\[', text)]  # filters need eval
        problems += [(path.name, m) for m in re.findall(r"javascript:", text)]
    assert problems == []


def _csp(resp) -> dict[str, str]:
    policy = resp.headers["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


def test_pages_carry_csp_nosniff_referrer_policy_and_frame_ancestors_none(app, admin, make):
    client = app.test_client()
    login(client, admin)
    pool = make.pool(members=[admin])
    customer = make.customer(pool, owner=admin)
    for path in ("/", f"/pools/{pool.id}", f"/customers/{customer.id}", "/admin", "/profile", "/login"):
        resp = client.get(path, follow_redirects=True)
        assert resp.status_code == 200, path
        csp = _csp(resp)
        assert csp["script-src"] == "script-src 'self'", path
        assert "unsafe" not in csp["default-src"] and "unsafe" not in csp["style-src"]
        assert csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "Strict-Transport-Security" not in resp.headers  # plain http: no HSTS
        body = resp.get_data(as_text=True)
        assert not re.search(r"<script\b(?![^>]*\bsrc=)", body), path
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", body), path


def test_public_form_may_still_be_framed(client, make, manager):
    pool = make.pool(admins=[manager])
    make.lead_form(pool, slug="expo")
    resp = client.get("/f/expo")
    assert "frame-ancestors" not in _csp(resp) and _csp(resp)["script-src"] == "script-src 'self'"
    assert "X-Frame-Options" not in resp.headers


def _cookie_lines(resp) -> dict[str, str]:
    return {line.split("=", 1)[0]: line for line in resp.headers.getlist("Set-Cookie")}


def test_over_https_cookies_are_secure_and_hsts_is_sent(app, rep):
    client = app.test_client()
    resp = client.post(
        "/login",
        data={"email": rep.email, "password": PASSWORD, "remember": "y"},
        base_url="https://crm.test",
    )
    cookies = _cookie_lines(resp)
    assert "; Secure" in cookies["session"] and "; Secure" in cookies["remember_token"]
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    plain = app.test_client().post("/login", data={"email": rep.email, "password": PASSWORD, "remember": "y"})
    assert all("Secure" not in line for line in _cookie_lines(plain).values())


# ---------------------------------------------------------------- trusted proxies


@pytest.fixture
def proxied(app_config):
    """The same database, served behind one trusted proxy (CRM_TRUSTED_PROXIES=1)."""
    proxied = create_app(app_config | {"CRM_TRUSTED_PROXIES": 1})
    proxied.test_client_class = IsolatedClient
    yield proxied
    with proxied.app_context():
        db.engine.dispose()


def _fail_logins(client, users, address):
    for user in users:
        resp = client.post(
            "/login",
            data={"email": user.email, "password": "wrong-pass"},
            headers={"X-Forwarded-For": address},
        )
        assert resp.status_code == 422


def test_behind_a_trusted_proxy_each_client_address_is_throttled_separately(app, proxied, make):
    victims = [make.user(Role.REP) for _ in range(5)]
    rep = make.user(Role.REP)
    client = proxied.test_client()
    _fail_logins(client, victims, "203.0.113.7")
    ok = client.post(
        "/login",
        data={"email": rep.email, "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.20"},
    )
    assert ok.status_code == 303  # another client behind the same proxy is not locked out
    blocked = proxied.test_client().post(
        "/login", data={"email": rep.email, "password": PASSWORD}, headers={"X-Forwarded-For": "203.0.113.7"}
    )
    assert blocked.status_code == 422 and "登录失败次数过多" in blocked.get_data(as_text=True)
    https = proxied.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" in https.headers


def test_without_trusted_proxies_forwarded_headers_are_ignored(app, make):
    victims = [make.user(Role.REP) for _ in range(5)]
    rep = make.user(Role.REP)
    client = app.test_client()
    _fail_logins(client, victims, "203.0.113.7")
    spoofed = client.post(
        "/login",
        data={"email": rep.email, "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.20"},
    )
    assert spoofed.status_code == 422  # same peer address: still throttled, the header changes nothing
    https = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in https.headers


def test_public_form_rate_limit_keys_on_the_forwarded_client(proxied, make, manager):
    from crm.models import RateLimitHit

    pool = make.pool(admins=[manager])
    make.lead_form(pool, slug="expo")
    client = proxied.test_client()
    for address in ("203.0.113.7", "198.51.100.20"):
        client.post("/f/expo", data={"token": "bad"}, headers={"X-Forwarded-For": address})
    keys = set(db.session.scalars(db.select(RateLimitHit.key)))
    assert keys == {"form:203.0.113.7", "form:198.51.100.20"}
