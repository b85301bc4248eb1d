"""Background jobs through rq against a real Redis (``TEST_REDIS_URL`` or the embedded server).

Only this module's queues are touched: each test empties ``default``/``dispatch`` before and after.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import SimpleWorker
from rq.job import Job, JobStatus

from crm import queues
from crm.access import access
from workers import jobs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_conn(app):
    conn = queues.get_redis()
    for name in queues.QUEUES:
        queues.get_queue(name).empty()
    for key in conn.scan_iter("crm:cron:tick:*"):  # an earlier run's schedulers claimed these ticks
        conn.delete(key)
    yield conn
    for name in queues.QUEUES:
        queues.get_queue(name).empty()


def _fail_job():
    raise ValueError("boom")


jobs_fail = jobs.app_job(_fail_job)


def test_enqueued_job_runs_through_a_worker_and_keeps_its_result(app, redis_conn):
    job = queues.enqueue(jobs.heartbeat)
    assert job is not None and job.get_status() == JobStatus.QUEUED
    worker = SimpleWorker([queues.get_queue("default")], connection=redis_conn)
    assert worker.work(burst=True) is True
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value().startswith(str(time.gmtime().tm_year))


def test_a_failing_job_lands_in_the_failed_registry_and_the_next_job_still_runs(app, redis_conn):
    bad = queues.enqueue(jobs_fail)
    good = queues.enqueue(jobs.heartbeat)
    SimpleWorker([queues.get_queue("default")], connection=redis_conn).work(burst=True)
    assert Job.fetch(bad.id, connection=redis_conn).get_status() == JobStatus.FAILED
    assert bad.id in queues.get_queue("default").failed_job_registry.get_job_ids()
    assert Job.fetch(good.id, connection=redis_conn).get_status() == JobStatus.FINISHED


def test_same_job_id_while_waiting_is_enqueued_once(app, redis_conn):
    first = queues.enqueue(jobs.heartbeat, job_id="crm-test-once")
    second = queues.enqueue(jobs.heartbeat, job_id="crm-test-once")
    assert first.id == second.id
    assert queues.get_queue("default").count == 1


def test_unknown_queue_name_is_a_programming_error(app):
    with pytest.raises(ValueError):
        queues.get_queue("nope")


@pytest.fixture
def dead_redis_config(app_config):
    # Port 1 on loopback: connection refused at once, like a Redis that is down.
    return {**app_config, "REDIS_URL": "redis://127.0.0.1:1/0"}


def test_enqueue_with_redis_down_returns_none_and_logs(dead_redis_config, caplog):
    from crm import create_app

    app = create_app(dead_redis_config)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="crm.queues"):
        assert queues.enqueue(jobs.heartbeat) is None
        started = time.monotonic()
        assert queues.enqueue(jobs.heartbeat) is None  # not retried for a while: no second timeout
        assert time.monotonic() - started < 0.05
    assert "could not enqueue workers.jobs.heartbeat" in caplog.text


def test_a_request_that_enqueues_still_succeeds_when_redis_is_down(dead_redis_config):
    from crm import create_app

    app = create_app(dead_redis_config)

    @app.route("/_test/enqueue", methods=["POST"])
    @access(None)
    def enqueue_view():
        job = queues.enqueue(jobs.heartbeat)
        return {"queued": job is not None}

    resp = app.test_client().post("/_test/enqueue")
    assert resp.status_code == 200
    assert resp.get_json() == {"queued": False}


def _env(app) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL=app.config["REDIS_URL"],
        CRM_INSTANCE_PATH=app.instance_path,
        SECRET_KEY="test-secret",
    )
    return env


def test_worker_process_connects_forks_runs_a_job_and_logs(app, redis_conn):
    job = queues.enqueue(jobs.heartbeat)
    done = subprocess.run(
        [sys.executable, "-m", "workers.worker", "--burst"],
        cwd=ROOT, env=_env(app), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "worker connected to" in done.stderr
    assert "heartbeat: database reachable" in done.stderr
    assert Job.fetch(job.id, connection=redis_conn).get_status() == JobStatus.FINISHED


def test_worker_refuses_an_unknown_queue(app):
    done = subprocess.run(
        [sys.executable, "-m", "workers.worker", "--burst", "nope"],
        cwd=ROOT, env=_env(app), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown queue(s): nope" in done.stderr


def test_scheduler_process_connects_and_enqueues_the_schedule(app, redis_conn):
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.scheduler"],
        cwd=ROOT, env=_env(app), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Every interval job of the schedule is enqueued once when the scheduler starts (cron-time jobs wait
    # for their time).
    schedule = (ROOT / "workers" / "cron.py").read_text(encoding="utf-8")
    expected = {
        f"workers.jobs.{name}"
        for name in re.findall(r"cron\.register\(\s*jobs\.(\w+)[^)]*interval=", schedule)
    }
    assert "workers.jobs.heartbeat" in expected
    try:
        deadline = time.monotonic() + 30
        queued: list = []
        while time.monotonic() < deadline:
            queued = [
                job.func_name for queue in ("default", "dispatch") for job in queues.get_queue(queue).jobs
            ]
            if expected <= set(queued):
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert sorted(queued) == sorted(expected)
    assert "scheduler connected to" in err
    assert "Registered 'workers.jobs.heartbeat'" in err
    assert proc.returncode == 0


def test_worker_waits_for_redis_instead_of_exiting(app, tmp_path):
    env = {**_env(app), "REDIS_URL": "redis://127.0.0.1:1/0"}
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, env=env, stderr=log_file)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "Redis not reachable" not in log_path.read_text():
                time.sleep(0.1)
            assert proc.poll() is None  # still running, waiting
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Redis not reachable" in log_path.read_text()
