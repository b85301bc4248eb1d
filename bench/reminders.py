"""Reminder dispatch and inbox benchmark (issue 6), on SQLite and PostgreSQL.

    python bench/reminders.py [--customers 1000000] [--due 100000] [--db sqlite|postgres|both]

For each database it builds (set-based SQL) 1,000,000 customers, 51 reps, 100,000 reminders due now plus
200,000 historical ones, and a rep holding 300 customers with a realistic inbox. Then:

1. **Dispatch**: a global JSON webhook points at a receiver (an asyncio HTTP/1.1 keep-alive server on
   127.0.0.1 in its own process, counting receipts per ``Idempotency-Key``); two ``rq worker`` processes
   (SimpleWorker, Redis db 4) each run a dispatch job. Reports the time from enqueueing to the last
   receipt, the rate, and checks every reminder arrived exactly once.
2. **Inbox**: ``GET /inbox/sections`` (the polled fragment) for the 300-customer rep through the Flask test
   client, p50/p95 over 300 requests, against the bare SQL of the same query (ratio).

SQLite file: /tmp/crm_bench_followups.sqlite3; PostgreSQL database: crm_bench_followups (created).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
SQLITE_PATH = Path("/tmp/crm_bench_followups.sqlite3")
PG_ADMIN = "postgresql://postgres@127.0.0.1/postgres"
PG_URL = "postgresql://postgres@127.0.0.1/crm_bench_followups"
REPS = 50
BENCH_REP_CUSTOMERS = 300


# ---------------------------------------------------------------- receiver (own process)


def _receiver_main(port_queue: multiprocessing.Queue) -> None:
    counts: dict[str, int] = {}
    state = {"requests": 0, "first": None, "last": None}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                if method == "GET" and path == "/stats":
                    body = json.dumps({"requests": state["requests"], "unique": len(counts),
                                       "max": max(counts.values(), default=0), "first": state["first"],
                                       "last": state["last"]}).encode()  # fmt: skip
                else:
                    key = headers.get("idempotency-key", "")
                    counts[key] = counts.get(key, 0) + 1
                    state["requests"] += 1
                    now = time.time()
                    state["first"] = state["first"] or now
                    state["last"] = now
                    body = b'{"ok":true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def receiver_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        return json.loads(resp.read())


# ---------------------------------------------------------------- data


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def build(app, customers: int, due: int, now: datetime) -> dict:
    """Schema and data, set-based. Returns ids the measurements need."""
    from sqlalchemy import text

    from crm.auth.services import create_user
    from crm.bootstrap import ensure_defaults
    from crm.extensions import db
    from crm.models import Pool, Role, Team, User, WebhookEndpoint

    with app.app_context():
        db.drop_all()
        db.create_all()
        s = db.session
        ensure_defaults(s, now)
        team = Team(name="华东一组")
        s.add(team)
        s.flush()
        manager = create_user(s, email="boss@bench.cn", name="王主管", password="bench-pass-1", role=Role.MANAGER,
                              team=team, now=now)  # fmt: skip
        team.manager = manager
        reps = [create_user(s, email=f"rep{i}@bench.cn", name=f"销售{i}", password="bench-pass-1", team=team, now=now)
                for i in range(REPS + 1)]  # fmt: skip
        pool = Pool(name="公海", daily_claim_limit=3, prev_owner_rule="none", prev_owner_days=0, release_times=[],
                    created_at=now)  # fmt: skip
        s.add(pool)
        s.flush()
        bench_rep, others = reps[0], reps[1:]
        pg = db.engine.dialect.name == "postgresql"
        params = {"now": _ts(now), "pool": pool.id, "rep0": bench_rep.id, "first_rep": others[0].id, "n": customers,
                  "nreps": len(others), "own_hi": BENCH_REP_CUSTOMERS + len(others) * 10000,
                  "b": BENCH_REP_CUSTOMERS}  # fmt: skip
        series = "generate_series(1, :n) AS g(n)" if pg else "seq"
        prefix = (
            "" if pg else "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :n) "
        )
        ago = (lambda days_expr: f"CAST(:now AS timestamp) - ({days_expr}) * interval '1 day'") if pg else (
            lambda days_expr: f"strftime('%Y-%m-%d %H:%M:%S', :now, '-' || ({days_expr}) || ' days') || '.000000'")  # fmt: skip
        owner = ("CASE WHEN n <= :b THEN :rep0 WHEN n <= :own_hi THEN :first_rep + ((n - :b) % :nreps) "
                 "ELSE NULL END")  # fmt: skip
        t = time.perf_counter()
        s.execute(
            text(
                prefix
                + f"""
            INSERT INTO customers (name, name_key, kind, lifecycle, phone, phone_key, utm, arrived_at, score, grade,
                score_breakdown, is_hot, owner_id, pool_id, holding_no, claimed_at, last_followup_at,
                first_contact_at, holding_followups, last_stage_change_at, senior_only, extension_days,
                created_at, updated_at)
            SELECT '客户' || n || '有限公司', '客户' || n, 'company', 'customer', '139' || (10000000 + n),
                '+86139' || (10000000 + n), '{{}}', {ago("n % 90 + 10")}, n % 100,
                CASE WHEN n % 10 = 0 THEN 'A' WHEN n % 3 = 0 THEN 'B' ELSE 'C' END, '{{}}', n % 10 = 0,
                {owner}, :pool, CASE WHEN {owner} IS NULL THEN 0 ELSE 1 END,
                CASE WHEN {owner} IS NULL THEN NULL ELSE {ago("n % 30 + 5")} END,
                CASE WHEN n % 4 = 0 THEN NULL ELSE {ago("n % 20")} END,
                CASE WHEN n % 4 = 0 THEN NULL ELSE {ago("n % 20 + 1")} END, n % 4,
                {ago("n % 40")}, false, 0, {ago("n % 90 + 10")}, :now
            FROM {series}
        """
            ),
            params,
        )  # noqa: S608  (bench: fixed SQL, bound parameters)
        s.commit()
        built = {"customers_s": time.perf_counter() - t}
        # 100k due now (one per owned customer beyond the bench rep's), 200k done history.
        t = time.perf_counter()
        due_prefix = (
            "" if pg else "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :m) "
        )
        due_series = "generate_series(1, :m) AS g(n)" if pg else "seq"
        minutes_ago = (lambda e: f"CAST(:now AS timestamp) - ({e}) * interval '1 minute'") if pg else (
            lambda e: f"strftime('%Y-%m-%d %H:%M:%S', :now, '-' || ({e}) || ' minutes') || '.000000'")  # fmt: skip
        s.execute(
            text(
                due_prefix
                + f"""
            INSERT INTO reminders (user_id, customer_id, kind, title, body, due_at, status, unique_key, created_at,
                round)
            SELECT c.owner_id, c.id, 'next_contact', '联系 ' || c.name || ': 发报价单', '发报价单',
                {minutes_ago("n % 600 + 1")}, 'open', 'bench:due:' || n, {minutes_ago("n % 600 + 1440")}, 0
            FROM {due_series} JOIN customers c ON c.id = :b + n
        """
            ),
            params | {"m": due},
        )  # noqa: S608
        s.execute(
            text(
                due_prefix
                + f"""
            INSERT INTO reminders (user_id, customer_id, kind, title, due_at, status, done_at, unique_key,
                created_at, fanned_out_at, round)
            SELECT :first_rep + (n % :nreps), :b + n, 'cadence', '定期回访', {ago("n % 60 + 2")}, 'done', :now,
                'bench:hist:' || n, {ago("n % 60 + 3")}, {ago("n % 60 + 2")}, 0
            FROM {due_series}
        """
            ),
            params | {"m": 2 * due},
        )  # noqa: S608
        s.commit()
        built["reminders_s"] = time.perf_counter() - t
        # The bench rep's inbox: 300 customers, a mix of today / overdue / later / done / stalled / recycle.
        from crm import clock
        from crm.models import Reminder, ReminderDelivery

        day_start, _end = clock.local_day_bounds(at=now)
        rows = []
        for i in range(1, BENCH_REP_CUSTOMERS + 1):
            kind, status = "next_contact", "open"
            if i % 6 == 0:
                due_at = day_start + timedelta(minutes=30 + i)  # today
            elif i % 6 == 1:
                due_at = day_start - timedelta(days=1 + i % 5)  # overdue
            elif i % 6 == 2:
                due_at = now + timedelta(days=2 + i % 7)  # later
            elif i % 6 == 3:
                due_at, status = now - timedelta(days=3), "done"
            elif i % 6 == 4:
                kind, due_at = "stalled", now - timedelta(days=1)
            else:
                kind, due_at = "recycle_warning", now - timedelta(hours=2)
            rows.append({"user_id": bench_rep.id, "customer_id": i, "kind": kind, "title": f"联系 客户{i}有限公司",
                         "body": "发报价单", "due_at": due_at, "status": status, "unique_key": f"bench:rep0:{i}",
                         "created_at": now - timedelta(days=7), "fanned_out_at": now - timedelta(hours=1),
                         "round": 0})  # fmt: skip
        s.execute(Reminder.__table__.insert(), rows)
        ids = (
            s.execute(text("SELECT id FROM reminders WHERE user_id = :u"), {"u": bench_rep.id})
            .scalars()
            .all()
        )
        s.execute(ReminderDelivery.__table__.insert(), [
            {"reminder_id": rid, "user_id": bench_rep.id, "channel": "in_app", "round": 0, "status": "sent",
             "attempts": 0, "next_attempt_at": now, "sent_at": now, "created_at": now} for rid in ids])  # fmt: skip
        s.add(WebhookEndpoint(kind="webhook", name="bench", url="http://127.0.0.1:1/placeholder", enabled=True,
                              extra={}, created_at=now))  # fmt: skip
        s.commit()
        if not pg:
            s.execute(text("ANALYZE"))
        else:
            s.execute(text("ANALYZE"))
        s.commit()
        built["bench_rep_id"] = bench_rep.id
        built["counts"] = dict(s.execute(text("SELECT 'customers', count(*) FROM customers UNION ALL "
                                              "SELECT 'reminders', count(*) FROM reminders")).all())  # fmt: skip
        assert s.get(User, bench_rep.id) is not None
        return built


# ---------------------------------------------------------------- dispatch


def run_dispatch(app, db_url: str, due: int) -> dict:
    from redis import Redis
    from rq import Queue, Worker

    from crm.extensions import db
    from crm.models import WebhookEndpoint

    port_queue: multiprocessing.Queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receiver_main, args=(port_queue,), daemon=True)
    receiver.start()
    port = port_queue.get(timeout=10)
    with app.app_context():
        ep = db.session.query(WebhookEndpoint).one()
        ep.url = f"http://127.0.0.1:{port}/hook"
        db.session.commit()
        db.engine.dispose()
    conn = Redis.from_url(REDIS_URL)
    conn.flushdb()
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=REDIS_URL, SECRET_KEY="bench-secret",
               CRM_INSTANCE_PATH="/tmp/crm_bench_followups_instance", PYTHONPATH=str(ROOT))  # fmt: skip
    rq = str(Path(sys.executable).parent / "rq")
    workers = [
        subprocess.Popen(
            [
                rq,
                "worker",
                "--url",
                REDIS_URL,
                "--worker-class",
                "rq.worker.SimpleWorker",
                "--max-idle-time",
                "15",
                "-q",
                "dispatch",
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        for _ in range(2)
    ]
    deadline = time.time() + 30
    while len(Worker.all(connection=conn)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    queue = Queue("dispatch", connection=conn)
    t0 = time.time()
    for _ in range(2):
        queue.enqueue("workers.jobs.dispatch_due", kwargs={"budget_seconds": 240}, job_timeout=600)
    stats = {}
    while time.time() - t0 < 300:
        stats = receiver_stats(port)
        if stats["requests"] >= due:
            break
        time.sleep(0.25)
    elapsed = (stats["last"] or time.time()) - t0
    first = (stats["first"] or t0) - t0
    time.sleep(1.0)
    stats = receiver_stats(port)  # anything arriving late would be a duplicate
    for w in workers:
        w.wait(timeout=120)
    receiver.terminate()
    with app.app_context():
        from sqlalchemy import text

        sent = db.session.execute(text("SELECT status, count(*) FROM reminder_deliveries WHERE channel = 'webhook' "
                                       "GROUP BY status")).all()  # fmt: skip
        in_app = db.session.execute(
            text("SELECT count(*) FROM reminder_deliveries WHERE channel = 'in_app'")
        ).scalar()
    return {"seconds": round(elapsed, 1), "first_receipt_s": round(first, 1),
            "rate_per_s": round(stats["requests"] / elapsed) if elapsed else None,
            "receipts": stats["requests"], "unique": stats["unique"], "max_per_reminder": stats["max"],
            "webhook_rows": dict(sent), "in_app_rows": in_app}  # fmt: skip


# ---------------------------------------------------------------- inbox


def run_inbox(app, rep_id: int, n: int = 300) -> dict:
    from crm import clock
    from crm.extensions import db
    from crm.inbox import services
    from crm.models import User
    from crm.reminders.services import user_tz

    client = app.test_client()
    with app.app_context():
        user = db.session.get(User, rep_id)
        with client.session_transaction() as sess:
            sess["_user_id"] = user.get_id()
            sess["_fresh"] = True

    def fragment() -> float:
        t = time.perf_counter()
        resp = client.get("/inbox/sections", headers={"HX-Request": "true"})
        assert resp.status_code == 200 and b'data-count="today"' in resp.data
        return time.perf_counter() - t

    def bare() -> float:
        with app.app_context():
            user = db.session.get(User, rep_id)
            now = clock.now()
            start, end = clock.local_day_bounds(user_tz(user), now)
            section = services._section_expr(start)
            from sqlalchemy import and_

            from crm.models import Reminder

            stmt = services._ranked(and_(Reminder.user_id == rep_id, services._visible(end)), section, section,
                                    services.LIMIT)  # fmt: skip
            t = time.perf_counter()
            db.session.execute(stmt).all()
            return time.perf_counter() - t

    for _ in range(20):
        fragment()
        bare()
    frag = sorted(fragment() for _ in range(n))
    sql = sorted(bare() for _ in range(n))

    def pct(values, p):
        return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)

    with app.app_context():
        counts = services.counts(services.inbox_for(db.session, db.session.get(User, rep_id), clock.now()))
    return {"fragment_p50_ms": pct(frag, 0.5), "fragment_p95_ms": pct(frag, 0.95), "sql_p50_ms": pct(sql, 0.5),
            "sql_p95_ms": pct(sql, 0.95), "ratio_p95": round(pct(frag, 0.95) / max(pct(sql, 0.95), 0.001), 1),
            "sections": counts}  # fmt: skip


# ---------------------------------------------------------------- main


def reset(app) -> dict:
    """Undo a previous dispatch run on an existing bench database (``--reuse``)."""
    from sqlalchemy import text

    from crm.extensions import db
    from crm.models import User

    with app.app_context():
        db.session.execute(text(
            "DELETE FROM reminder_deliveries WHERE reminder_id IN "
            "(SELECT id FROM reminders WHERE unique_key LIKE 'bench:due:%')"))  # fmt: skip
        db.session.execute(
            text("UPDATE reminders SET fanned_out_at = NULL WHERE unique_key LIKE 'bench:due:%'")
        )
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        rep = db.session.query(User).filter_by(email="rep0@bench.cn").one()
        return {"bench_rep_id": rep.id, "reused": True}


def bench(kind: str, customers: int, due: int, reuse: bool = False) -> dict:
    from crm import create_app

    if reuse:
        url = f"sqlite:///{SQLITE_PATH}" if kind == "sqlite" else PG_URL
    elif kind == "sqlite":
        SQLITE_PATH.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(SQLITE_PATH) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{SQLITE_PATH}"
    else:
        subprocess.run(["psql", PG_ADMIN, "-qc", "DROP DATABASE IF EXISTS crm_bench_followups"], check=True)
        subprocess.run(["psql", PG_ADMIN, "-qc", "CREATE DATABASE crm_bench_followups"], check=True)
        url = PG_URL
    os.environ["CRM_INSTANCE_PATH"] = "/tmp/crm_bench_followups_instance"
    from crm.config import database_url

    os.environ["DATABASE_URL"] = url
    resolved = database_url(Path("/nonexistent"))
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": resolved, "SECRET_KEY": "bench-secret", "REDIS_URL": REDIS_URL}
    )
    if kind == "sqlite":
        from sqlalchemy import event

        from crm.extensions import db

        with app.app_context():

            @event.listens_for(db.engine, "connect")
            def _wal(dbapi_conn, _record):  # the recommended production setting for SQLite
                dbapi_conn.execute("PRAGMA journal_mode=WAL")

    now = datetime.now(UTC)
    t = time.perf_counter()
    built = reset(app) if reuse else build(app, customers, due, now)
    built["build_s"] = round(time.perf_counter() - t, 1)
    inbox = run_inbox(app, built["bench_rep_id"])
    dispatched = run_dispatch(app, url, due)
    inbox_after = run_inbox(app, built["bench_rep_id"])
    return {"db": kind, "build": built, "inbox_before_dispatch": inbox, "dispatch": dispatched,
            "inbox_after_dispatch": inbox_after}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--reuse", action="store_true", help="Reuse the databases of a previous run.")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    for kind in kinds:
        # Each database in a fresh interpreter state would be cleaner; one process keeps it simple.
        result = bench(kind, args.customers, args.due, reuse=args.reuse)
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        d = result["dispatch"]
        ok = d["receipts"] == args.due and d["unique"] == args.due and d["max_per_reminder"] == 1
        print(f"[{kind}] dispatch {args.due} reminders: {d['seconds']} s, {d['rate_per_s']}/s, "
              f"exactly once: {'yes' if ok else 'NO'}; inbox fragment p95 "
              f"{result['inbox_after_dispatch']['fragment_p95_ms']} ms "
              f"(bare SQL {result['inbox_after_dispatch']['sql_p95_ms']} ms, "
              f"×{result['inbox_after_dispatch']['ratio_p95']})")  # fmt: skip


if __name__ == "__main__":
    main()
