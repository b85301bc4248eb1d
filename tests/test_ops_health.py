"""/healthz, /readyz, the 系统状态 page, /metrics and the request log."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crm import clock, create_app
from crm.extensions import db
from crm.models import User
from crm.ops import backup, logs
from crm.ops.runs import beat, record_job
from crm.pool import services as pool_services


@pytest.fixture
def migrated(app_config, fresh_db_url, tmp_path):
    app = create_app(
        {**app_config, "SQLALCHEMY_DATABASE_URI": fresh_db_url, "CRM_BACKUP_DIR": str(tmp_path / "bk")}
    )
    with app.app_context():
        assert app.test_cli_runner().invoke(args=["crm", "init-db"]).exit_code == 0
        yield app
        db.session.remove()
        db.engine.dispose()


def test_healthz_answers_while_the_process_is_up(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_is_ok_on_a_migrated_database_with_redis(migrated):
    response = migrated.test_client().get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ok", "reasons": []}


def test_readyz_is_503_with_reasons_when_redis_is_down_and_the_schema_is_behind(app_config):
    app = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:1/0"})
    with app.app_context():
        response = app.test_client().get("/readyz")
        db.engine.dispose()
    assert response.status_code == 503
    reasons = response.json["reasons"]
    assert any(r.startswith("redis:") for r in reasons), reasons
    # The test schema is built without the migrations: no revision recorded.
    assert any(r.startswith("migrations: database at none") for r in reasons), reasons


def test_system_page_is_for_admins_only(rep_client, client):
    assert rep_client.get("/admin/system").status_code == 403
    assert client.get("/admin/system").status_code == 302


def test_system_page_shows_processes_jobs_and_warns_of_a_missing_backup(admin_client, app, tmp_path):
    app.config["CRM_BACKUP_DIR"] = str(tmp_path / "bk")
    beat("web", pid=4242, host="web-a")
    record_job("dispatch_due", clock.now(), False, "SMTPServerDisconnected: gone")
    page = admin_client.get("/admin/system").get_data(as_text=True)
    assert "系统状态" in page and "web-a:4242" in page
    assert "超过两天没有备份" in page
    assert "SMTPServerDisconnected: gone" in page
    backup.backup()
    fragment = admin_client.get("/admin/system", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="system_panel"')
    assert "超过两天没有备份" not in fragment and "crm-" in fragment


def _metrics(client, **kwargs) -> dict[str, list]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.status_code
    return {f.name: f.samples for f in text_string_to_metric_families(response.get_data(as_text=True))}


def test_metrics_show_latency_by_route_claims_by_reason_queues_and_jobs(client, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    user = db.session.get(User, rep.id)
    before = _count(_metrics(client), "crm_claims", outcome="not_member")
    with pytest.raises(pool_services.PoolRefusal):
        pool_services.claim(db.session, customer.id + 999, user, clock.now())
    record_job("recycle_sweep", clock.now(), True)
    client.get("/healthz")
    found = _metrics(client)
    assert _count(found, "crm_claims", outcome="not_found") >= 1
    assert _count(found, "crm_claims", outcome="not_member") == before
    routes = {s.labels.get("route") for s in found["crm_http_request_duration_seconds"]}
    assert "/healthz" in routes
    assert {s.labels["queue"] for s in found["crm_queue_depth"]} == {"default", "dispatch"}
    assert _count(found, "crm_jobs", job="recycle_sweep", outcome="ok") == 1


def _count(found: dict, name: str, **labels) -> float:
    """The value of counter ``name`` with ``labels`` (the parser names a counter family without _total)."""
    samples = [s for s in found.get(name, []) if s.name == name + "_total"]
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_need_the_token_or_an_allowed_address(app):
    client = app.test_client()
    app.config["CRM_METRICS_ALLOW"] = "10.0.0.0/8"
    assert client.get("/metrics").status_code == 404
    app.config["CRM_METRICS_TOKEN"] = "s3cret-token"
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_multiprocess_mode_sums_every_process(tmp_path):
    """Two processes (like two gunicorn workers) count claims; a third, scraping, sees the sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = "from crm.ops import metrics; [metrics.claim_outcome('ok') for _ in range({n})]"
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True, timeout=60)
    scrape = textwrap.dedent("""
        from prometheus_client import generate_latest, CollectorRegistry, multiprocess
        reg = CollectorRegistry(); multiprocess.MultiProcessCollector(reg)
        print(generate_latest(reg).decode())
    """)
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert 'crm_claims_total{outcome="ok"} 5.0' in out.stdout


def test_one_log_line_per_request_with_request_id_user_and_no_calendar_token(rep_client, rep, caplog):
    caplog.set_level(logging.INFO, logger="crm.request")
    response = rep_client.get(
        "/calendar/SECRETTOKEN123456.ics?token=abc", headers={"X-Request-ID": "req-12345678"}
    )
    assert response.headers["X-Request-ID"] == "req-12345678"
    (record,) = [r for r in caplog.records if r.name == "crm.request"]
    line = record.getMessage()
    assert "SECRETTOKEN123456" not in line and "abc" not in line
    assert "/calendar/***.ics?token=***" in line
    assert record.request_id == "req-12345678" and record.user_id == rep.id
    entry = json.loads(logs.JSONFormatter().format(record))
    assert entry["request_id"] == "req-12345678" and entry["status"] == response.status_code
    assert entry["duration_ms"] >= 0 and "SECRETTOKEN" not in json.dumps(entry)


def test_gunicorn_access_log_masks_the_calendar_token(tmp_path, app_config):
    """A real gunicorn with its default access log format: the filter the app installs masks the token."""
    access = tmp_path / "access.log"
    env = {**os.environ, "SECRET_KEY": "x", "CRM_INSTANCE_PATH": str(tmp_path / "inst"),
           "DATABASE_URL": app_config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": app_config["REDIS_URL"]}  # fmt: skip
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "app:app", "--bind", "127.0.0.1:0", "--workers", "1",
         "--access-logfile", str(access), "--error-logfile", str(tmp_path / "error.log")],
        env=env, cwd=os.getcwd(),
    )  # fmt: skip
    try:
        port = _wait_for_port(tmp_path / "error.log")
        import urllib.error
        import urllib.request

        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/calendar/TOPSECRET999.ics", timeout=10)
        for _ in range(50):
            if access.exists() and access.read_text():
                break
            import time

            time.sleep(0.1)
        text = access.read_text()
        assert "/calendar/***.ics" in text and "TOPSECRET999" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(error_log) -> int:
    import re
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if error_log.exists():
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", error_log.read_text())
            if found and "Booting worker" in error_log.read_text():
                time.sleep(0.5)
                return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(error_log.read_text() if error_log.exists() else "gunicorn did not start")


def test_metrics_in_multiprocess_mode_still_show_the_shared_state(client, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    found = _metrics(client)
    assert {s.labels["queue"] for s in found["crm_queue_depth"]} == {"default", "dispatch"}
    assert "crm_sweeps" in found and "crm_reminder_deliveries" in found


def test_static_urls_carry_a_content_hash_for_long_caching(client, app):
    import hashlib
    from pathlib import Path

    page = client.get("/login").get_data(as_text=True)
    digest = hashlib.sha256((Path(app.static_folder) / "app.css").read_bytes()).hexdigest()[:10]
    assert f"/static/app.css?v={digest}" in page


def test_a_request_refused_by_the_first_hooks_is_logged_too(client, caplog):
    caplog.set_level(logging.INFO, logger="crm.request")
    bad = client.post("/login", data=b"email=%FF", content_type="application/x-www-form-urlencoded")
    assert bad.status_code == 400  # refused by the UTF-8 guard, the first hook before ours were first
    assert [r.status for r in caplog.records if r.name == "crm.request"] == [400]


def test_records_logged_while_a_request_is_handled_carry_its_id(app):
    from flask import g

    record = logging.LogRecord("crm.x", logging.WARNING, __file__, 1, "inside", None, None)
    with app.test_request_context("/"):
        g.request_id = "req-abcdef12"
        assert logs.RequestId().filter(record)
    assert record.request_id == "req-abcdef12"
    assert json.loads(logs.JSONFormatter().format(record))["request_id"] == "req-abcdef12"
