"""From one host to several, rehearsed on this machine (PostgreSQL only; slow).

Two gunicorn servers on 127.0.0.2 and 127.0.0.3 with their own instance folders and one SECRET_KEY, two rq
workers and two schedulers, one PostgreSQL database and one Redis, under a mixed load — claims from both
hosts racing for the same customers, follow-ups, an import uploaded on one host and finished on the other,
the sweeps and the reminder dispatch the schedulers start — and then:
a session made on one host works on the other; every cron job was enqueued at most once per tick and each
enqueued job ran once; no reminder was sent twice; the uploaded file was found by the other host.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.cron import get_cron_job_history_key
from sqlalchemy import func, select

from crm import clock, create_app
from crm.extensions import db
from crm.models import Customer, EventKind, ImportBatch, OpsJob, PoolEvent, Role, SweepRun, WebhookEndpoint
from crm.ops.cron_lock import LOCK_PREFIX
from crm.queues import QUEUES
from tests.conftest import IS_PG, redis_url_for_tests
from tests.factories import PASSWORD, Factory
from tests.receiver import Receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not IS_PG, reason="several hosts need PostgreSQL (set DATABASE_URL)"),
]
ROOT = Path(__file__).resolve().parent.parent
HOSTS = ("127.0.0.2", "127.0.0.3")
CUSTOMERS = 16
REMINDERS = 24


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Browser:
    """A user agent whose cookies go to every host (as behind one load balancer), redirects not followed."""

    def __init__(self):
        self.cookies: dict[str, str] = {}

    def request(self, host: tuple[str, int], method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, str]:  # fmt: skip
        conn = http.client.HTTPConnection(*host, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for value in resp.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        conn.close()
        return resp.status, dict(resp.headers), text

    def csrf(self, host, path: str) -> str:
        status, _h, page = self.request(host, "GET", path)
        assert status == 200, (path, status)
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    def form(self, host, path: str, fields: dict) -> tuple[int, dict, str]:
        from urllib.parse import urlencode

        return self.request(host, "POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip

    def upload(self, host, path: str, fields: dict, filename: str, data: bytes) -> tuple[int, dict, str]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]  # fmt: skip
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: text/csv\r\n\r\n".encode() + data + b"\r\n")  # fmt: skip
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(
            host, "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )


def _api(host, token: str, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*host, timeout=30)
    body = json.dumps(payload).encode() if payload is not None else None
    conn.request(
        method,
        path,
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def _wait(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(app_config, fresh_db_url, tmp_path):
    """The database seeded through the migrations, then the six processes; everything stopped afterwards."""
    redis_url = redis_url_for_tests()
    conn = Redis.from_url(redis_url)
    for name in QUEUES:
        Queue(name, connection=conn).empty()
    for key in conn.scan_iter(f"{LOCK_PREFIX}*"):
        conn.delete(key)

    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": fresh_db_url})
    with app.app_context():
        assert app.test_cli_runner().invoke(args=["crm", "init-db"]).exit_code == 0
        make = Factory(db.session)
        manager = make.user(Role.MANAGER, name="王主管", email="manager@rehearsal.cn")
        reps = [make.user(Role.REP, name=f"销售{i}", cap=100) for i in range(2)]
        pool = make.pool("华东公海", admins=[manager], members=reps, daily_claim_limit=100)
        customer_ids = [make.customer(pool, name=f"演练客户{i}有限公司").id for i in range(CUSTOMERS)]
        tokens = [make.token(rep) for rep in reps]
        receiver = Receiver()
        db.session.add(WebhookEndpoint(kind="webhook", name="hook", url=f"{receiver.url}/hook", enabled=True,
                                       extra={}, created_at=clock.now()))  # fmt: skip
        planned = [
            make.reminder(
                reps[i % 2],
                title=f"演练提醒 {i}",
                due_at=clock.now() - timedelta(minutes=1 + i),
                commit=False,
            )
            for i in range(REMINDERS)
        ]
        db.session.commit()
        planned_keys = {f"reminder-{r.id}-0" for r in planned}
        pool_id = pool.id
        db.session.remove()
        db.engine.dispose()

    shared = tmp_path / "shared-uploads"
    env = {**os.environ, "DATABASE_URL": fresh_db_url, "REDIS_URL": redis_url, "SECRET_KEY": secrets.token_hex(32),
           "CRM_UPLOAD_DIR": str(shared), "TZ": "UTC", "LOG_FORMAT": "text"}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs: list[tuple[str, subprocess.Popen]] = []
    hosts = []

    def start(name: str, args: list[str], instance: Path):
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**env, "CRM_INSTANCE_PATH": str(instance)},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        procs.append((name, proc))

    receiver.__enter__()
    started = time.time()
    try:
        for i, ip in enumerate(HOSTS):
            instance = tmp_path / f"host{i}"
            port = _free_port(ip)
            hosts.append((ip, port))
            start(f"web{i}", ["-m", "gunicorn", "app:app", "--bind", f"{ip}:{port}", "--workers", "2",
                              "--access-logfile", "-"], instance)  # fmt: skip
            start(f"worker{i}", ["-m", "workers.worker"], instance)
            start(f"scheduler{i}", ["-m", "workers.scheduler"], instance)
        for host in hosts:
            _wait(lambda h=host: _ready(h), 60, f"{host} to be ready")
        yield {"hosts": hosts, "tokens": tokens, "customers": customer_ids, "pool_id": pool_id, "app": app,
               "receiver": receiver, "planned_keys": planned_keys, "redis": conn, "started": started,
               "logs": tmp_path}  # fmt: skip
    finally:
        for _name, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        receiver.__exit__(None, None, None)
        for name in QUEUES:
            Queue(name, connection=conn).empty()
        for key in conn.scan_iter(f"{LOCK_PREFIX}*"):
            conn.delete(key)


def _ready(host) -> bool:
    try:
        conn = http.client.HTTPConnection(*host, timeout=5)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _logs(cluster) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(cluster["logs"].glob("*.log")))


def test_two_hosts_two_workers_two_schedulers_under_a_mixed_load(cluster):
    a, b = cluster["hosts"]
    tokens, customer_ids, receiver = cluster["tokens"], cluster["customers"], cluster["receiver"]

    # Claims: both reps race for every customer, each through a different host.
    with ThreadPoolExecutor(max_workers=8) as pool:
        calls = [pool.submit(_api, host, token, "POST", f"/api/v1/customers/{cid}/claim")
                 for cid in customer_ids for host, token in ((a, tokens[0]), (b, tokens[1]))]  # fmt: skip
        statuses = [call.result()[0] for call in calls]
    assert statuses.count(200) == CUSTOMERS, statuses
    assert set(statuses) == {200, 409}, statuses

    # Follow-ups on the customers each rep won, through alternating hosts.
    app = cluster["app"]
    with app.app_context():
        rep_ids = [_user_id(token) for token in tokens]
        owners = dict(
            db.session.execute(
                select(Customer.id, Customer.owner_id).where(Customer.id.in_(customer_ids))
            ).all()
        )
        db.session.remove()
    mine = {rep: [cid for cid, owner in owners.items() if owner == rep_ids[rep]] for rep in (0, 1)}
    next_at = clock.local(clock.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    for rep, ids in mine.items():
        for n, cid in enumerate(ids[:4]):
            status, body = _api((a, b)[n % 2], tokens[rep], "POST", f"/api/v1/customers/{cid}/followups",
                                {"channel": "phone", "content": "演练跟进", "next_plan": "回访", "next_contact_at": next_at})  # fmt: skip
            assert status == 201, body

    # A session made on host A works on host B; an import uploaded on A is mapped and run on B.
    browser = Browser()
    token = browser.csrf(a, "/login")
    status, headers, _ = browser.form(
        a, "/login", {"csrf_token": token, "email": "manager@rehearsal.cn", "password": PASSWORD}
    )
    assert status in (302, 303), status
    status, _h, page = browser.request(b, "GET", "/")
    assert status == 200 and "王主管" in page
    rows = [[f"导入演练公司{i}", f"联系人{i}", f"1390000{i:04d}"] for i in range(5)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["公司名称", "联系人", "手机号码"], *rows])
    status, headers, page = browser.upload(a, "/intake/imports", {"csrf_token": browser.csrf(a, "/intake/imports"),
                                           "pool_id": str(cluster["pool_id"])}, "演练.csv", buffer.getvalue().encode("utf-8-sig"))  # fmt: skip
    assert status in (302, 303), page[:500]
    batch_path = headers["Location"].replace(f"http://{a[0]}:{a[1]}", "")
    token_b = browser.csrf(b, batch_path)
    status, _h, page = browser.form(
        b, batch_path, {"csrf_token": token_b, "col-0": "name", "col-1": "contact_name", "col-2": "phone"}
    )
    assert status == 200, page[:500]
    status, _h, _page = browser.form(b, batch_path + "/run", {"csrf_token": token_b})
    assert status in (302, 303), status

    # Extra dispatch jobs on top of the schedulers' own: the workers race for the same deliveries.
    dispatch = Queue("dispatch", connection=cluster["redis"])
    for _ in range(2):
        dispatch.enqueue("workers.jobs.dispatch_due")
    planned = cluster["planned_keys"]
    _wait(lambda: planned <= set(receiver.keys), 60, "the reminders to be delivered")
    _wait(
        lambda: all(Queue(q, connection=cluster["redis"]).count == 0 for q in QUEUES),
        60,
        "the queues to drain",
    )
    time.sleep(2)  # a duplicate, if any, would arrive now
    finished = time.time()

    # Every planned reminder arrived once; reminders the load itself made (a finished import's notice, an
    # assignment notice) may arrive too, each once as well.
    assert planned <= set(receiver.keys) and set(receiver.keys.values()) == {1}, receiver.keys
    with app.app_context():
        claimed = db.session.execute(
            select(PoolEvent.customer_id, func.count())
            .where(PoolEvent.kind == EventKind.CLAIMED)
            .group_by(PoolEvent.customer_id)
        ).all()
        assert sorted(cid for cid, _n in claimed) == sorted(customer_ids) and {n for _c, n in claimed} == {1}
        batch = db.session.scalar(select(ImportBatch))
        assert (batch.status, batch.rows_created) == ("imported", 5), (batch.status, batch.errors)
        # Every cron job: at most one enqueue per tick, and each enqueued job ran (once).
        _assert_once_per_tick(cluster["redis"], cluster["started"], finished)
        runs = {row.name: row for row in db.session.scalars(select(OpsJob))}
        assert runs["recycle_sweep"].failures == 0 and runs["dispatch_due"].failures == 0
        sweeps = db.session.scalar(
            select(func.count()).select_from(SweepRun).where(SweepRun.dry_run.is_(False))
        )
        assert sweeps == _enqueued(cluster["redis"], "workers.jobs.recycle_sweep", cluster["started"]), _logs(
            cluster
        )
        db.session.remove()


def _user_id(token: str) -> int:
    from crm.auth.services import sha256
    from crm.models import ApiToken

    return db.session.scalar(select(ApiToken.user_id).where(ApiToken.token_hash == sha256(token)))


INTERVALS = {"heartbeat": 60, "recycle_sweep": 180, "dispatch_due": 60, "generate_reminders": 600,
             "check_possible_duplicates": 300, "sample_spot_checks": 3600}  # fmt: skip


def _enqueued(conn, name: str, since: float) -> int:
    return len(conn.zrangebyscore(get_cron_job_history_key(name), since, "+inf"))


def _assert_once_per_tick(conn, since: float, until: float) -> None:
    for short, interval in INTERVALS.items():
        name = f"workers.jobs.{short}"
        stamps = [
            score
            for _id, score in conn.zrangebyscore(
                get_cron_job_history_key(name), since, "+inf", withscores=True
            )
        ]
        assert stamps, f"{name} was never enqueued"
        ticks = [math.floor(s / interval) for s in stamps]
        assert len(ticks) == len(set(ticks)), f"{name} enqueued twice in one tick: {stamps}"
        # Two schedulers without the lock would have enqueued each job twice at start.
        assert len(stamps) <= math.floor(until / interval) - math.floor(since / interval) + 1
