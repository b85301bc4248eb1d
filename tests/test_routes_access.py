"""Every registered route, walked as anonymous, rep, manager and admin: login redirect / 401, 403, or served.

A route whose URL has a parameter needs a sample value in ``sample_params``; add one with a new route.
"""

from __future__ import annotations

import pytest

from crm.access import declared_role
from crm.extensions import db
from crm.models import Role
from tests.conftest import login

ORDER = [None, Role.REP, Role.MANAGER, Role.ADMIN]


@pytest.fixture
def world(make, rep, manager, admin):
    """Objects every role may reach: a pool the rep is in, a customer the rep owns, a token of each user."""
    pool = make.pool(members=[rep], admins=[manager])
    owned = make.customer(pool, owner=rep)
    unowned = make.customer(pool)
    contact = make.contact(owned)
    tokens = {}
    from crm.models import ApiToken

    for user in (rep, manager, admin):
        make.token(user)
        tokens[user.id] = db.session.query(ApiToken).filter_by(user_id=user.id).first().id
    # Follow-ups and reminders: each user's own reminder and in-app notification, a spot check for the
    # manager, a webhook endpoint that refuses connections at once (port 9).
    from crm.models import ReminderDelivery, SpotCheck, WebhookEndpoint

    reminders, deliveries = {}, {}
    for user in (rep, manager, admin):
        r = make.reminder(user, customer=owned if user is rep else None)
        d = ReminderDelivery(reminder_id=r.id, user_id=user.id, channel="in_app", round=0, status="sent",
                             attempts=0, next_attempt_at=r.due_at, created_at=r.due_at)  # fmt: skip
        db.session.add(d)
        db.session.flush()
        reminders[user.id], deliveries[user.id] = r.id, d.id
    fu = make.followup(owned, rep)
    check = SpotCheck(followup_id=fu.id, manager_id=manager.id, sampled_on=fu.at.date(), verdict="pending")
    endpoint = WebhookEndpoint(kind="webhook", name="本机", url="https://127.0.0.1:9/hook", enabled=True,
                               extra={}, created_at=fu.at)  # fmt: skip
    db.session.add_all([check, endpoint])
    db.session.commit()
    world = {"pool": pool, "owned": owned, "unowned": unowned, "tokens": tokens, "reminders": reminders,
             "deliveries": deliveries, "check_id": check.id, "endpoint_id": endpoint.id,
             "contact": contact}  # fmt: skip
    # intake: a conflict, a lead form and an import batch (the manager administers the pool)
    # (between two customers of the manager's team, so the manager may resolve it too)
    world["conflict"] = make.conflict(make.customer(pool, owner=rep), owned)
    # recycle: the rep's pending extension request, decided by their manager
    from crm.models import ExtensionRequest

    ext = ExtensionRequest(customer_id=owned.id, requester_id=rep.id, holding_no=owned.holding_no, days=3,
                           reason="出差", status="pending", created_at=fu.at)  # fmt: skip
    db.session.add(ext)
    db.session.flush()
    world["extension_request"] = ext.id
    world["lead_form"] = make.lead_form(pool)
    world["batch"] = make.import_batch(manager, pool)
    # each user's finished background task (crm/tasks) with the file it produced
    from crm import clock
    from crm.models import Task
    from crm.tasks.services import files_dir

    (files_dir() / "sample.csv").write_text("a,b\n")
    world["tasks"] = {}
    for user in (rep, manager, admin):
        task = Task(kind="import_preview", owner_id=user.id, params={"batch_id": world["batch"].id},
                    status="done", result={"file": "sample.csv"}, created_at=clock.now())  # fmt: skip
        db.session.add(task)
        db.session.flush()
        world["tasks"][user.id] = task.id
    # pipeline: an open opportunity of the rep's customer
    from crm import clock
    from crm.pipeline import services as pipeline

    world["opportunity"] = pipeline.create_opportunity(
        db.session, owned, rep, clock.now(), pipeline.OpportunityInput("年度采购")
    )
    db.session.commit()
    return world


def sample_params(world, user) -> dict:
    rep_team = world["owned"].owner.team
    return {
        "user_id": world["owned"].owner_id,
        "team_id": rep_team.id if rep_team else 1,
        "level_id": 1,
        "token_id": world["tokens"].get(user.id if user else 0, 1),
        "code": "en",
        "pool_id": world["pool"].id,
        "customer_id": world["owned"].id,
        "filename": "app.css",
        "section": "pool",
        "contact_id": world["contact"].id,
        "request_id": world["extension_request"],
        "reminder_id": world["reminders"].get(user.id if user else 0, 1),
        "delivery_id": world["deliveries"].get(user.id if user else 0, 1),
        "check_id": world["check_id"],
        "endpoint_id": world["endpoint_id"],
        "key": "today",
        "token": "not-a-valid-token",
        "conflict_id": world["conflict"].id,
        "form_id": world["lead_form"].id,
        "slug": world["lead_form"].slug,
        "batch_id": world["batch"].id,
        "task_id": world["tasks"].get(user.id if user else 0, 1),
        "fmt": "xlsx",
        "opportunity_id": world["opportunity"].id,
        "stage_id": 1,
        "panel": "funnel",
        "table": "funnel",
    }


# Permission is checked before the body: these roles may open these routes (declared rep: a pool admin assigns)
# but not for the sample customer, their own (reps do not transfer) — 403, not the empty body's 422.
REFUSED_BEFORE_BODY = {
    (Role.REP, "POST", "/customers/<int:customer_id>/assign"),
    (Role.REP, "POST", "/api/v1/customers/<int:customer_id>/assign"),
    # Only the owner locks their own customer (the sample belongs to the rep).
    *(
        (who, "POST", path)
        for who in (Role.MANAGER, Role.ADMIN)
        for path in ("/customers/<int:customer_id>/lock", "/api/v1/customers/<int:customer_id>/lock")
    ),
}


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method, declared_role(view)


def _call(client, rule, method, params, headers=None):
    from flask import url_for

    missing = [arg for arg in rule.arguments if arg not in params]
    assert not missing, f"{rule.rule}: add sample values for {missing} in tests/test_routes_access.py"
    with client.application.test_request_context():
        url = url_for(rule.endpoint, **{k: params[k] for k in rule.arguments})
    return getattr(client, method.lower())(url, headers=headers or {})


def test_every_view_declares_who_may_use_it(app):
    for rule, _method, role in _routes(app):
        assert role is None or role in Role.ALL, rule.endpoint


@pytest.mark.parametrize("who", ["anonymous", Role.REP, Role.MANAGER, Role.ADMIN])
def test_walk_every_route_as_each_role(app, make, world, rep, manager, admin, who):
    def make_token(user):
        return make.token(user, "read write leads admin" if user.is_admin else "read write leads")

    users = {Role.REP: rep, Role.MANAGER: manager, Role.ADMIN: admin}
    user = users.get(who)
    token = make_token(user) if user is not None else None
    failures = []
    for rule, method, role in _routes(app):
        client = app.test_client()
        headers = {}
        if user is not None:
            if rule.rule.startswith("/api/"):
                headers["Authorization"] = "Bearer " + token
            else:
                login(client, user)
        resp = _call(client, rule, method, sample_params(world, user), headers)
        status = resp.status_code
        is_api = rule.rule.startswith("/api/")
        if role is None:
            # /readyz answers 503 by design here: the test schema is built without the migrations.
            ok = (
                status < 500 and status not in (401, 403) or (rule.endpoint == "ops.readyz" and status == 503)
            )
        elif user is None:
            ok = status == 401 if is_api else (status == 302 and "/login" in resp.headers["Location"])
        elif ORDER.index(who) < ORDER.index(role):
            ok = status == 403
        elif method == "GET":
            ok = status < 400 and "/login" not in resp.headers.get("Location", "")
        elif (who, method, rule.rule) in REFUSED_BEFORE_BODY:
            ok = status == 403
        else:
            ok = status not in (401, 403, 405) and status < 500
        if not ok:
            failures.append(f"{method} {rule.rule} as {who} (declared {role}): {status}")
        db.session.rollback()
    assert not failures, "\n".join(failures)
