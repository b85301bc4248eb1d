"""The API's possible-duplicate check in the background: leads that routing does not wait for get a pending
check written with them and are checked by an rq job (run here through a SimpleWorker against real Redis)
that drains the checks of many requests; routable leads are checked at once."""

from __future__ import annotations

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm import clock, queues
from crm.extensions import db
from crm.intake import services as intake_services
from crm.intake.services import check_possible_duplicates, drain_pending_checks
from crm.models import AssignStrategy, DuplicateConflict, PendingDuplicateCheck, PoolMember
from tests.conftest import IS_PG

SIMILAR = {
    "name": "苏州瑞丰新材料科技有限公司",
    "contact_name": "周",
    "phone": "13600136000",
    "industry": "金融",
    "job_level": "决策层",
    "company_size": 2000,
    "channel": "老客户转介绍",
    "region": "华东",
    "email": "z@rf.cn",
    "wechat": "zhou_rf",
}


def _clear(conn) -> None:
    queues.get_queue("default").empty()
    for key in conn.keys("crm:nudged:*"):
        conn.delete(key)


@pytest.fixture
def redis_conn(app, monkeypatch):
    # A short nudge interval: the job's closing wait is this long.
    monkeypatch.setattr(queues, "NUDGE_SECONDS", 0.05)
    conn = queues.get_redis()
    _clear(conn)
    yield conn
    _clear(conn)


def _pending() -> list[tuple[int, int]]:
    return [
        tuple(r)
        for r in db.session.execute(select(PendingDuplicateCheck.customer_id, PendingDuplicateCheck.group_id))
    ]


@pytest.fixture
def pool(make, manager):
    return make.pool("新线索池", kind="lead", admins=[manager])


@pytest.fixture
def token(make, rep):
    return make.token(rep, "write")  # a leads-only token's answers leave out the duplicate check


def _conflicts() -> list[tuple[int, int]]:
    return [
        tuple(r)
        for r in db.session.execute(select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id))
    ]


def _work(conn) -> None:
    assert SimpleWorker([queues.get_queue("default")], connection=conn).work(burst=True)


def test_an_unroutable_leads_check_is_queued_and_the_job_opens_the_conflict_once(
    api, token, pool, make, redis_conn
):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    resp = api(token).post("/api/v1/leads", json=SIMILAR)
    assert resp.status_code == 201
    assert resp.json["duplicate_check"] == "queued" and resp.json["possible_duplicates"] is None
    assert _conflicts() == [] and queues.get_queue("default").count == 1
    _work(redis_conn)
    db.session.expire_all()
    assert _conflicts() == [(resp.json["id"], existing.id)]
    conflict = db.session.scalar(select(DuplicateConflict))
    assert (
        conflict.status == "open"
        and conflict.similarity >= 85
        and "苏州瑞丰新材料有限公司" in conflict.reason
    )
    # Run again (a retry, a duplicate enqueue): nothing new.
    queues.enqueue("workers.jobs.check_possible_duplicates", [resp.json["id"]])
    _work(redis_conn)
    assert db.session.scalar(select(func.count()).select_from(DuplicateConflict)) == 1


def test_a_pair_marked_distinct_is_not_asked_again_by_the_job(api, token, pool, make, redis_conn, session):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    lead_id = api(token).post("/api/v1/leads", json=SIMILAR).json["id"]
    _work(redis_conn)
    conflict = session.scalar(select(DuplicateConflict))
    conflict.status = "distinct"
    session.commit()
    assert check_possible_duplicates(session, [lead_id], clock.now()) == {}
    session.commit()
    assert _conflicts() == [(lead_id, existing.id)]


def test_the_job_compares_only_with_customers_older_than_the_lead(api, token, pool, redis_conn):
    first = api(token).post("/api/v1/leads", json=SIMILAR).json["id"]
    second = (
        api(token)
        .post(
            "/api/v1/leads",
            json=SIMILAR
            | {
                "name": "苏州瑞丰新材料有限公司",
                "phone": "13500135000",
                "email": "b@rf.cn",
                "wechat": "b_rf",
            },  # fmt: skip
        )
        .json["id"]
    )
    _work(redis_conn)
    db.session.expire_all()
    # One pair, as the check at intake time gives: the newer lead against the older one, not both ways.
    assert _conflicts() == [(second, first)]


def test_a_routable_lead_is_checked_at_once_and_held_back(api, token, pool, make, rep, redis_conn, session):
    pool.auto_assign_strategy = AssignStrategy.ROUND_ROBIN
    session.add(PoolMember(pool_id=pool.id, user_id=rep.id))
    session.commit()
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    resp = api(token).post("/api/v1/leads", json=SIMILAR)
    assert resp.json["duplicate_check"] == "done"
    assert [d["id"] for d in resp.json["possible_duplicates"]] == [existing.id]
    assert resp.json["owner_id"] is None and queues.get_queue("default").count == 0


def test_with_redis_unreachable_the_check_runs_in_the_request(app, api, token, pool, make, redis_conn):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    app.extensions["crm_redis_down_until"] = float("inf")
    try:
        resp = api(token).post("/api/v1/leads", json=SIMILAR)
    finally:
        app.extensions.pop("crm_redis_down_until", None)
    assert resp.json["duplicate_check"] == "done"
    assert [d["id"] for d in resp.json["possible_duplicates"]] == [existing.id]
    db.session.expire_all()
    assert _conflicts() == [(resp.json["id"], existing.id)]


def test_an_array_of_leads_is_checked_in_one_job(api, token, pool, make, redis_conn):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    body = [SIMILAR, SIMILAR | {"name": "杭州蓝鲸物流有限公司", "phone": "13500135000", "email": "l@lj.cn",
                                "wechat": "lj_wl"}]  # fmt: skip
    results = api(token).post("/api/v1/leads", json=body).json["results"]
    assert [r["duplicate_check"] for r in results] == ["queued", "queued"]
    assert queues.get_queue("default").count == 1
    _work(redis_conn)
    db.session.expire_all()
    assert _conflicts() == [(results[0]["id"], existing.id)]


def test_many_requests_share_one_job_and_each_requests_leads_are_checked(api, token, pool, make, redis_conn):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    ids = [
        api(token).post("/api/v1/leads", json=SIMILAR | {"phone": f"1360013600{k}", "email": f"{k}@rf.cn",
                                                         "wechat": f"rf_{k}"}).json["id"]
        for k in range(3)
    ]  # fmt: skip
    assert queues.get_queue("default").count == 1
    _work(redis_conn)
    db.session.expire_all()
    # Each lead against what was there before it (as at intake): the first against the old customer, the
    # later ones against it and the earlier leads.
    assert sorted(_conflicts()) == sorted(
        [(ids[0], existing.id), (ids[1], existing.id), (ids[1], ids[0]),
         (ids[2], existing.id), (ids[2], ids[0]), (ids[2], ids[1])]
    )  # fmt: skip
    assert _pending() == []
    # The next request asks for a job of its own (the drain cleared the flag).
    resp = api(token).post(
        "/api/v1/leads", json=SIMILAR | {"phone": "13700137000", "email": "n@rf.cn", "wechat": "rf_new"}
    )
    assert resp.status_code == 201 and queues.get_queue("default").count == 1


def test_a_request_right_after_a_nudge_asks_redis_nothing_and_its_lead_is_still_checked(
    app, api, token, pool, make, redis_conn, monkeypatch
):
    """The nudge is at most once per NUDGE_SECONDS per process: a request right after one does not touch
    Redis (here: a dead Redis would have made it check in the request), and the job that first nudge
    asked for sees its lead (the job drains once more after NUDGE_SECONDS)."""
    monkeypatch.setattr(queues, "NUDGE_SECONDS", 0.5)
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    first = api(token).post("/api/v1/leads", json=SIMILAR).json
    live = app.extensions["crm_redis"]
    app.extensions["crm_redis"] = queues.connect("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        second = (
            api(token)
            .post(
                "/api/v1/leads", json=SIMILAR | {"phone": "13500135000", "email": "b@rf.cn", "wechat": "b_rf"}
            )
            .json
        )
    finally:
        app.extensions["crm_redis"] = live
    assert first["duplicate_check"] == second["duplicate_check"] == "queued"
    assert "crm_redis_down_until" not in app.extensions
    assert sorted(i for i, _g in _pending()) == [first["id"], second["id"]]
    assert queues.get_queue("default").count == 1
    _work(redis_conn)
    db.session.expire_all()
    assert sorted(_conflicts()) == sorted(
        [(first["id"], existing.id), (second["id"], existing.id), (second["id"], first["id"])]
    )
    assert _pending() == []


def test_a_failing_check_leaves_its_pending_rows_for_the_next_drain(
    api, token, pool, make, redis_conn, monkeypatch, session
):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    lead_id = api(token).post("/api/v1/leads", json=SIMILAR).json["id"]
    real = intake_services._open_conflicts

    def broken(*args, **kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(intake_services, "_open_conflicts", broken)
    with pytest.raises(RuntimeError):
        drain_pending_checks(session, clock.now())
    session.rollback()
    assert _pending() == [(lead_id, lead_id)] and _conflicts() == []
    monkeypatch.setattr(intake_services, "_open_conflicts", real)
    assert drain_pending_checks(session, clock.now()) == 1
    assert _pending() == [] and _conflicts() == [(lead_id, existing.id)]


@pytest.mark.skipif(not IS_PG, reason="row locks: SQLite serialises the drains with its write lock")
def test_a_drain_skips_the_groups_another_drain_holds(app, api, token, pool, make, redis_conn, session):
    existing = make.customer(pool, name="苏州瑞丰新材料有限公司")
    ids = [
        api(token).post("/api/v1/leads", json=SIMILAR | {"phone": f"1360013600{k}", "email": f"{k}@rf.cn",
                                                         "wechat": f"rf_{k}"}).json["id"]
        for k in range(2)
    ]  # fmt: skip
    other = Session(db.engine)
    try:
        assert other.execute(intake_services._CLAIM_PENDING, {"groups": 1}).all() == [(ids[0], ids[0])]
        # The first group is claimed by another drain (not committed yet): this one takes only the second.
        assert drain_pending_checks(session, clock.now()) == 2
        assert sorted(_conflicts()) == sorted([(ids[1], existing.id), (ids[1], ids[0])])
        assert _pending() == [(ids[0], ids[0])]
    finally:
        other.rollback()
        other.close()
    session.rollback()
    # Released (the other drain failed): the next drain checks it.
    assert drain_pending_checks(session, clock.now()) == 1
    assert _pending() == [] and (ids[0], existing.id) in _conflicts()
