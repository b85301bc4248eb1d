"""API core: the OpenAPI document, bearer tokens (hashed, revocable, scoped) and JSON errors."""

from __future__ import annotations

import re

from sqlalchemy import select

from crm import clock
from crm.auth.services import sha256
from crm.extensions import db
from crm.models import ApiToken


def test_openapi_document_is_openapi_3_and_lists_every_documented_api_route(app, client):
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"]
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    documented = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api.openapi":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len("/api/v1") :])
        assert getattr(app.view_functions[rule.endpoint], "api_doc", None), f"{rule.rule} has no @doc"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"][path][method.lower()]
            assert operation["summary"] and operation["responses"]
            assert operation["x-scope"] in {"read", "write", "leads", "admin"}
            assert {"401", "403"} <= set(operation["responses"])
            documented.add((path, method.lower()))
    assert ("/me", "get") in documented
    put = spec["paths"]["/settings/{section}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"


def test_missing_unknown_and_malformed_tokens_get_401_json(client):
    for headers in ({}, {"Authorization": "Bearer ghcrm_not-a-real-token"}, {"Authorization": "Basic abc"}):
        resp = client.get("/api/v1/me", headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"] == "unauthorized"


def test_revoked_token_gets_401(api, rep, make):
    plain = make.token(rep)
    assert api(plain).get("/api/v1/me").status_code == 200
    token = db.session.scalar(select(ApiToken).where(ApiToken.user_id == rep.id))
    token.revoked_at = clock.now()
    db.session.commit()
    assert api(plain).get("/api/v1/me").status_code == 401


def test_token_of_a_deactivated_user_gets_401(api, rep, make):
    plain = make.token(rep)
    rep.active = False
    db.session.commit()
    assert api(plain).get("/api/v1/me").status_code == 401


def test_session_cookie_does_not_authenticate_the_api(rep_client):
    assert rep_client.get("/api/v1/me").status_code == 401


def test_token_without_the_needed_scope_gets_403(api, rep, make):
    resp = api(make.token(rep, "leads")).get("/api/v1/me")
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "insufficient_scope", "message": "此令牌没有 read 权限。"}


def test_role_refusal_is_403_json(api, rep, make):
    resp = api(make.token(rep)).get("/api/v1/settings")
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "forbidden"


def test_tokens_are_stored_hashed(make, rep):
    plain = make.token(rep)
    token = db.session.scalar(select(ApiToken).where(ApiToken.user_id == rep.id))
    assert token.token_hash == sha256(plain)
    stored = " ".join(str(v) for v in (token.token_hash, token.prefix, token.name, token.scopes))
    assert plain not in stored and plain[6:] not in stored


def test_token_created_on_the_profile_page_is_shown_once_and_works(rep_client, api):
    resp = rep_client.post("/profile/tokens", data={"tk-name": "脚本", "tk-scopes": ["read"]},
                           headers={"HX-Request": "true"})  # fmt: skip
    assert resp.status_code == 200
    plain = re.search(r"ghcrm_[A-Za-z0-9_-]{20,}", resp.get_data(as_text=True)).group(0)
    assert api(plain).get("/api/v1/me").get_json()["scopes"] == ["read"]
    assert plain not in rep_client.get("/profile").get_data(as_text=True)


def test_bad_token_form_is_422_in_place(rep_client):
    resp = rep_client.post("/profile/tokens", data={"tk-name": "", "tk-scopes": ["read"]},
                           headers={"HX-Request": "true"})  # fmt: skip
    assert resp.status_code == 422
    assert "请填写令牌名称" in resp.get_data(as_text=True)


def test_bad_json_bodies_get_json_errors_not_500(app, api, rep, make):
    from crm.access import access
    from crm.api.core import doc, form_from_json, json_body
    from crm.auth.forms import TokenForm
    from crm.models import Role

    @app.route("/api/v1/_test/echo", methods=["POST"])
    @access(Role.REP)
    @doc("echo", scope="write")
    def echo():
        form = form_from_json(TokenForm, json_body())
        return {"name": form.name.data}

    client = api(make.token(rep))
    cases = [
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
        ({"json": [1, 2]}, 400, "malformed_json"),
        ({"data": "name=x"}, 415, "malformed_json"),
        ({"json": {"name": "", "scopes": ["read"]}}, 422, "invalid"),
        ({"json": {"name": {"a": 1}, "scopes": ["read"]}}, 422, "invalid"),
    ]
    for kwargs, status, code in cases:
        resp = client.post("/api/v1/_test/echo", **kwargs)
        assert (resp.status_code, resp.get_json()["error"]) == (status, code), kwargs
        assert resp.get_json()["message"]
    resp = client.post("/api/v1/_test/echo", json={"name": "", "scopes": ["read"]})
    assert resp.get_json()["fields"]["name"] == ["请填写令牌名称。"]
    assert client.post("/api/v1/_test/echo", json={"name": "ok", "scopes": ["read"]}).get_json() == {
        "name": "ok"
    }


def test_unknown_api_path_is_404_json(api, rep, make):
    resp = api(make.token(rep)).get("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"
