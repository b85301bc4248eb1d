"""``/api/v1/openapi.json`` (built from the registered endpoints and their forms) and ``/api/v1/me``."""

from __future__ import annotations

import re

from flask import current_app, jsonify
from flask_login import current_user
from wtforms import (
    BooleanField,
    DateField,
    DateTimeField,
    DecimalField,
    FloatField,
    IntegerField,
    SelectField,
    SelectMultipleField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from crm.access import access
from crm.api.core import bp, doc
from crm.forms import choice_values
from crm.models import Role

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
STANDARD_ERRORS = {
    400: "请求无效 / malformed_json",
    401: "缺少或无效的令牌",
    403: "无权限或令牌权限范围不足",
    404: "记录不存在",
    422: "字段校验失败 (fields 给出每个字段的错误)",
}


def _field_schema(field) -> dict:
    if isinstance(field, SelectMultipleField):
        schema = {"type": "array", "items": {"type": "string"}}
    elif isinstance(field, SelectField):
        choices = [c for c in choice_values(field) if c not in (None, "")]
        schema = {"type": "string", "enum": [str(c) for c in choices]} if choices else {"type": "string"}
    elif isinstance(field, BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, IntegerField):
        schema = {"type": "integer"}
    elif isinstance(field, DecimalField | FloatField):
        schema = {"type": "number"}
    elif isinstance(field, DateTimeField):
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(field, DateField):
        schema = {"type": "string", "format": "date"}
    else:
        schema = {"type": "string"}
    for validator in field.validators:
        if isinstance(validator, Length) and validator.max and validator.max > 0:
            schema["maxLength"] = validator.max
        if isinstance(validator, NumberRange):
            if validator.min is not None:
                schema["minimum"] = validator.min
            if validator.max is not None:
                schema["maximum"] = validator.max
    if field.description:
        schema["description"] = str(field.description)
    else:
        schema["description"] = str(field.label.text)
    return schema


def form_schema(form_class: type) -> dict:
    """A JSON schema for a WTForms form class (instantiated without data or CSRF)."""
    with current_app.test_request_context():
        form = form_class(meta={"csrf": False})
        properties, required = {}, []
        for field in form:
            properties[field.name] = _field_schema(field)
            if any(isinstance(v, DataRequired | InputRequired) for v in field.validators):
                required.append(field.name)
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def build_openapi() -> dict:
    paths: dict[str, dict] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = current_app.view_functions[rule.endpoint]
        info = getattr(view, "api_doc", None)
        if info is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len("/api/v1") :])
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if "int:" in rule.rule else "string"},
            }
            for name in rule.arguments
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in info["query"].items()
        ]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation: dict = {
                "operationId": f"{rule.endpoint}_{method.lower()}",
                "summary": info["summary"],
                "description": (view.__doc__ or "").strip(),
                "parameters": params,
                "security": [] if getattr(view, "access_role", "x") is None else [{"bearer": []}],
                "x-scope": getattr(view, "api_scope", "read"),
                "responses": {
                    str(code): {"description": text}
                    for code, text in (info["responses"] or {200: "OK"}).items()
                },
            }
            for code, text in STANDARD_ERRORS.items():
                operation["responses"].setdefault(
                    str(code),
                    {
                        "description": text,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
            body = info["body"]
            if body is not None and method in ("POST", "PUT", "PATCH"):
                schema = body if isinstance(body, dict) else form_schema(body)
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "公海 CRM API",
            "version": "1",
            "description": "Bearer tokens from the profile page or `flask --app app crm create-token EMAIL`. "
            'Errors are `{"error": code, "message": …}`; times are ISO 8601 with offset.',
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": dict(sorted(paths.items())),
    }


@bp.route("/openapi.json")
@access(None)
def openapi():
    """The OpenAPI 3 document of this API."""
    return jsonify(build_openapi())


@bp.route("/me")
@access(Role.REP)
@doc("当前令牌对应的用户", responses={200: "用户信息"})
def me():
    """Who the bearer token belongs to, with role, level, team and token scopes."""
    from flask import g

    user = current_user
    return jsonify(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        level=user.level.name if user.level else None,
        holding_cap=user.level.holding_cap if user.level else None,
        team_id=user.team_id,
        scopes=g.api_token.scopes.split(),
    )
