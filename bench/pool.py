"""Benchmark of the pool board and claiming: 1,000,000 customers across 5 pools.

For each database (a SQLite file under /tmp, the PostgreSQL database ``crm_bench_pool``) it builds the data
once with set-based inserts (``INSERT … SELECT`` over a generated series / recursive CTE, indexes built
after the load), then measures through the Flask test client, 200 requests each (after a warm-up):

- the board's first page (full page, as a rep opens it) and the same as an htmx fragment;
- a filtered page (region + grade, the htmx filter request) and a deep "load more" page (keyset cursor);
- the bare SQL for the same rows (the board's ``SELECT … ORDER BY score DESC, id DESC LIMIT 31`` run on
  the raw DB-API cursor), and the ratio request / bare SQL; every statement the request runs, replayed on
  the raw driver, and its ratio to the bare SQL (the request's database work);
- two floors for reading those ratios: an empty route of a bare Flask app, and the app's ``/healthz``
  (one ``SELECT 1``), through the same test client;
- claiming from the board (``POST /customers/<id>/claim``, htmx), 200 claims by 50 reps.

Targets: board p95 ≤ 30 ms, ≤ 3× the bare SQL; claim p95 ≤ 10 ms.

Usage: ``python bench/pool.py [--db sqlite|postgresql|both] [--customers N] [--requests N] [--rebuild]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 3, 16, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
SQLITE_PATH = Path("/tmp/crm_bench_pool.sqlite3")
PG_ADMIN = "postgresql://postgres@127.0.0.1/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1/crm_bench_pool"
POOLS = 5
TEAMS = 5
REPS_PER_TEAM = 10
OWNED_PER_REP = 20
REGIONS = ["华东", "华南", "华北", "华中", "西南", "西北"]
INDUSTRIES = ["制造业", "互联网", "教育", "医疗", "零售", "物流", "金融", "餐饮"]
SOURCES = ["form", "import", "api", "manual"]
TAGS = ["展会", "重点", "老客户", "需定制方案", "高意向"]


def make_app(url: str):
    from crm import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "INSTANCE_PATH": "/tmp/crm_bench_pool_instance",
            "SECRET_KEY": "bench",
            "WTF_CSRF_ENABLED": False,
        }
    )


def _ts(dt: datetime) -> str:
    """A timestamp the way ``UTCDateTime`` stores it (naive UTC)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _customer_select(dialect: str, n: int, first_rep: int, reps: int) -> str:
    """SQL producing ``n`` customer rows from a series ``i`` (1..n), columns in ``_COLUMNS`` order."""
    now = _ts(NOW)
    owned = reps * OWNED_PER_REP
    regions = " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(REGIONS))
    industries = " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(INDUSTRIES))
    sources = " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(SOURCES))
    if dialect == "sqlite":
        minus_minutes = f"datetime('{now}', '-' || (i % 129600) || ' minutes')"
        plus_day = f"datetime('{now}', '+1 day')"
        phone = "'138' || printf('%08d', i)"
        bool_false = "0"
    else:
        minus_minutes = f"timestamp '{now}' - (i % 129600) * interval '1 minute'"
        plus_day = f"timestamp '{now}' + interval '1 day'"
        phone = "'138' || lpad(i::text, 8, '0')"
        bool_false = "false"
    score = "((i * 7919) % 101)"
    return f"""
        SELECT
          '客户' || i || '有限公司', '客户' || i, 'company', 'lead', {phone}, '+86' || {phone},
          CASE ((i * 31) / 7) % 6 {regions} END,
          CASE ((i * 17) / 3) % 8 {industries} END,
          CASE (i / 11) % 4 {sources} END,
          '{{}}', {minus_minutes}, {score},
          CASE WHEN {score} >= 80 THEN 'A' WHEN {score} >= 50 THEN 'B' ELSE 'C' END,
          '{{}}', {bool_false},
          CASE WHEN i <= {owned} THEN {first_rep} + (i % {reps}) ELSE NULL END,
          1 + (i % {POOLS}),
          CASE WHEN i <= {owned} THEN 1 ELSE 0 END, 0,
          CASE WHEN i <= {owned} THEN NULL ELSE {minus_minutes} END,
          CASE WHEN i % 997 = 0 AND i > {owned} THEN {plus_day} ELSE NULL END,
          {bool_false}, 0, {minus_minutes}, {minus_minutes}
        """


_COLUMNS = (
    "name, name_key, kind, lifecycle, phone, phone_key, region, industry, source, utm, arrived_at, score, grade, "
    "score_breakdown, is_hot, owner_id, pool_id, holding_no, holding_followups, pool_entered_at, visible_from, "
    "senior_only, extension_days, created_at, updated_at"
)


def build(url: str, dialect: str, customers: int) -> None:
    """Schema, users, teams, pools, ``customers`` customers (set-based) and tags; then ANALYZE."""
    from sqlalchemy import text

    from crm.bootstrap import ensure_defaults
    from crm.extensions import db
    from crm.models import Customer, Level, Pool, PoolMember, Team, User

    app = make_app(url)
    with app.app_context():
        if dialect == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        db.create_all()
        ensure_defaults(db.session, NOW)
        level = db.session.query(Level).filter_by(name="初级销售").one()
        level.holding_cap = 40
        teams = [Team(name=f"销售{k + 1}组") for k in range(TEAMS)]
        db.session.add_all(teams)
        db.session.flush()
        rows = [
            {"email": f"rep{t}_{k}@bench.cn", "name": f"销售{t}-{k}", "password_hash": "x", "role": "rep",
             "level_id": level.id, "team_id": teams[t].id, "active": True, "regions": [], "skills": [],
             "notify_prefs": {}, "session_version": 1, "claim_seq": 0, "created_at": NOW - timedelta(days=400)}
            for t in range(TEAMS) for k in range(REPS_PER_TEAM)
        ]  # fmt: skip
        db.session.execute(User.__table__.insert(), rows)
        reps = db.session.query(User).order_by(User.id).all()
        first_rep = reps[0].id
        pools = [
            Pool(name=f"公海{p + 1}", daily_claim_limit=10, prev_owner_rule="none", prev_owner_days=0,
                 mask_contacts=True, release_times=[], created_at=NOW - timedelta(days=400))
            for p in range(POOLS)
        ]  # fmt: skip
        db.session.add_all(pools)
        db.session.flush()
        for pool in pools:
            db.session.add_all(PoolMember(pool_id=pool.id, team_id=team.id) for team in teams)
        db.session.commit()
        indexes = [ix for ix in Customer.__table__.indexes]
        with db.engine.begin() as conn:
            for ix in indexes:
                ix.drop(conn)
            started = time.perf_counter()
            if dialect == "sqlite":
                conn.execute(
                    text(
                        f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {customers}) "
                        f"INSERT INTO customers ({_COLUMNS}) {_customer_select(dialect, customers, first_rep, len(reps))}"
                        " FROM s"
                    )
                )
            else:
                conn.execute(
                    text(
                        f"INSERT INTO customers ({_COLUMNS}) "
                        f"{_customer_select(dialect, customers, first_rep, len(reps))}"
                        f" FROM generate_series(1::bigint, {customers}) AS i"
                    )
                )
            print(f"  inserted {customers:,} customers in {time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            for ix in indexes:
                ix.create(conn)
            print(f"  built {len(indexes)} customer indexes in {time.perf_counter() - started:.1f} s")
            conn.execute(
                text("INSERT INTO tags (name, system) VALUES " + ", ".join(f"('{t}', false)" for t in TAGS))
            )
            conn.execute(
                text(
                    "INSERT INTO customer_tags (customer_id, tag_id) "
                    "SELECT c.id, t.id FROM customers c JOIN tags t ON t.id = 1 + (c.id / 50) % 5 WHERE c.id % 50 = 0"
                )
            )
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            # PostgreSQL: VACUUM sets the visibility map (as autovacuum would soon), so index-only scans
            # do not visit the table; both: statistics for the planner.
            conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))
        db.engine.dispose()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn, n: int, warmup: int = 20) -> dict:
    """Wall-clock and this thread's CPU time of ``fn``, p50 / p95 in ms (the CPU figure is what the
    request itself costs; on a shared, busy host the wall clock also counts waiting for a core)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return {
        "p50": statistics.median(wall),
        "p95": percentile(wall, 0.95),
        "cpu50": statistics.median(cpu),
        "cpu95": percentile(cpu, 0.95),
    }


def _driver_params(value, dialect: str):
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return _ts(value) if dialect == "sqlite" else naive
    return value


def bare_sql(engine, stmt):
    """A callable running ``stmt``'s SQL on the raw DB-API cursor and fetching all rows."""
    compiled = stmt.compile(dialect=engine.dialect)
    params = {k: _driver_params(v, engine.dialect.name) for k, v in compiled.params.items()}
    sql = str(compiled)
    raw = engine.raw_connection()
    args = tuple(params[name] for name in compiled.positiontup) if engine.dialect.name == "sqlite" else params

    def run():
        cur = raw.cursor()
        cur.execute(sql, args)
        rows = cur.fetchall()
        cur.close()
        return rows

    return run


def empty_flask_request():
    """A callable making one request to a bare Flask app (one route returning an empty body) through its
    test client: the framework's own floor, below which no Flask page can go."""
    from flask import Flask

    bare_app = Flask("bench_floor")
    bare_app.add_url_rule("/", "empty", lambda: "")
    client = bare_app.test_client()
    return lambda: client.get("/")


def request_sql(engine, fn) -> list[tuple[str, object]]:
    """The SQL statements (as sent to the driver, with their parameters) that one call of ``fn`` runs."""
    from sqlalchemy import event

    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def replay(engine, statements):
    """A callable running ``statements`` on one raw DB-API connection, fetching every row."""
    raw = engine.raw_connection()

    def run():
        cur = raw.cursor()
        for sql, params in statements:
            cur.execute(sql, params)
            if cur.description is not None:
                cur.fetchall()
        cur.close()

    return run


def measure(url: str, dialect: str, n: int) -> dict:
    from flask import g  # noqa: F401 - the app imports it too; keeps import costs out of the timings
    from sqlalchemy import select, text

    from crm.extensions import db
    from crm.models import Customer, Pool, User
    from crm.pool import board as board_q

    app = make_app(url)
    results = {}
    with app.app_context():
        # Undo the claims of an earlier run so every run starts from the built data.
        owned = TEAMS * REPS_PER_TEAM * OWNED_PER_REP
        db.session.execute(text("DELETE FROM claim_counts"))
        db.session.execute(
            text(
                f"UPDATE customers SET owner_id = NULL, holding_no = 0 WHERE id > {owned} AND owner_id IS NOT NULL"
            )
        )
        db.session.commit()
        reps = db.session.scalars(select(User).where(User.role == "rep").order_by(User.id)).all()
        cookies = [r.get_id() for r in reps]
        pool_id = 1
        filters = board_q.BoardFilters(region="华东", grade="A")
        # A cursor ten pages down for the "load more" measurement.
        deep = board_q.BoardFilters()
        for _ in range(10):
            page = board_q.board_page(db.session, db.session.get(Pool, pool_id), deep, NOW)
            deep.cursor = board_q.parse_cursor(page.next_cursor)
        bare = {
            "first": bare_sql(db.engine, board_q.board_statement(pool_id, board_q.BoardFilters(), NOW, 31)),
            "filtered": bare_sql(db.engine, board_q.board_statement(pool_id, filters, NOW, 31)),
            "deep": bare_sql(db.engine, board_q.board_statement(pool_id, deep, NOW, 31)),
        }
        deep_cursor = board_q.encode_cursor(*deep.cursor)
        engine = db.engine
        targets = list(
            db.session.scalars(
                board_q.board_statement(pool_id, board_q.BoardFilters(), NOW, 400, columns=(Customer.id,))
            )
        )
        db.session.remove()

    from crm import clock

    def client_for(cookie):
        c = app.test_client()
        with c.session_transaction() as sess:
            sess["_user_id"] = cookie
            sess["_fresh"] = True
        return c

    clients = [client_for(c) for c in cookies]
    rep = clients[0]
    htmx = {"HX-Request": "true"}

    def get(path, headers=None):
        resp = rep.get(path, headers=headers or {})
        assert resp.status_code == 200, (path, resp.status_code)
        return resp

    with clock.frozen(NOW):
        scenarios = {
            "first": lambda: get(f"/pools/{pool_id}"),
            "first_htmx": lambda: get(f"/pools/{pool_id}", htmx),
            "filtered": lambda: get(f"/pools/{pool_id}?region=华东&grade=A", htmx),
            "deep": lambda: get(f"/pools/{pool_id}?cursor={deep_cursor}", htmx),
        }
        for name, fn in scenarios.items():
            results[name] = timed(fn, n)
            statements = request_sql(engine, fn)
            results[f"sql_{name}"] = timed(replay(engine, statements), n, warmup=20)
            results[f"sql_{name}"]["count"] = len(statements)
        for name, fn in bare.items():
            results[f"bare_{name}"] = timed(fn, n, warmup=50)
        # Floors: what a request costs before it does any work, to read the "× bare SQL" ratio against.
        results["floor_app"] = timed(lambda: get("/healthz"), n)
        results["floor_flask"] = timed(empty_flask_request(), n)
        # Claims: 200 distinct customers from the top of the board, 50 reps taking turns (4 each).
        queue = iter(targets)
        counter = iter(range(10**9))

        def claim():
            i = next(counter)
            cid = next(queue)
            resp = clients[i % len(clients)].post(
                f"/customers/{cid}/claim", data={"ctx": "board"}, headers=htmx
            )
            assert resp.status_code == 200 and "已领取" in resp.get_data(as_text=True), resp.get_data(
                as_text=True
            )[:300]

        results["claim"] = timed(claim, n, warmup=0)
    return results


def report(dialect: str, results: dict) -> None:
    print(f"\n== {dialect}: p50 / p95 in ms (wall clock; in brackets the CPU time of this process)")
    print("   'rows SQL' = the board's own SELECT for the same rows on the raw driver; 'all SQL' = every")
    print("   statement the request ran (auth, access, rows, tags, counters), replayed on the raw driver.")
    for name, label in (("first", "board first page (full page)"), ("first_htmx", "board first page (htmx)"),
                        ("filtered", "filtered page region+grade (htmx)"), ("deep", "load-more page 11 (htmx)")):  # fmt: skip
        r = results[name]
        b = results["bare_" + ("first" if name.startswith("first") else name)]
        a = results["sql_" + name]
        ok = "OK" if r["p95"] <= 30 else "SLOW"
        print(
            f"  {label:35s} {r['p50']:6.2f} / {r['p95']:6.2f} ({r['cpu50']:5.2f} / {r['cpu95']:5.2f})  [{ok}]"
        )
        print(f"  {'':35s} rows SQL {b['p50']:5.2f} / {b['p95']:5.2f}: request ×{r['p50'] / b['p50']:.1f} / ×{r['p95'] / b['p95']:.1f};"
              f"  all SQL ({a['count']} stmts) {a['p50']:5.2f} / {a['p95']:5.2f} = ×{a['p50'] / b['p50']:.1f} / ×{a['p95'] / b['p95']:.1f} of rows SQL")  # fmt: skip
    for name, label in (("floor_flask", "floor: empty route, bare Flask app"),
                        ("floor_app", "floor: /healthz (SELECT 1, JSON)")):  # fmt: skip
        r, b = results[name], results["bare_first"]
        print(f"  {label:35s} {r['p50']:6.2f} / {r['p95']:6.2f} → ×{r['p50'] / b['p50']:.1f} / "
              f"×{r['p95'] / b['p95']:.1f} of the rows SQL")  # fmt: skip
    r = results["claim"]
    print(f"  {'claim from the board (htmx POST)':35s} {r['p50']:6.2f} / {r['p95']:6.2f} ({r['cpu50']:5.2f} / "
          f"{r['cpu95']:5.2f})  [{'OK' if r['p95'] <= 10 else 'SLOW'}]")  # fmt: skip


def ensure_pg_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'crm_bench_pool'").fetchone():
            conn.execute("CREATE DATABASE crm_bench_pool")


def has_data(url: str, customers: int) -> bool:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM customers")).scalar() >= customers
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the data even if it exists")
    args = parser.parse_args()
    targets = []
    if args.db in ("sqlite", "both"):
        targets.append(("sqlite", f"sqlite:///{SQLITE_PATH}"))
    if args.db in ("postgresql", "both"):
        ensure_pg_database()
        targets.append(("postgresql", PG_URL))
    for dialect, url in targets:
        print(f"\n{dialect}: {url}")
        if args.rebuild or not has_data(url, args.customers):
            if dialect == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(str(SQLITE_PATH) + suffix).unlink(missing_ok=True)
            started = time.perf_counter()
            build(url, dialect, args.customers)
            print(f"  data ready in {time.perf_counter() - started:.1f} s")
        report(dialect, measure(url, dialect, args.requests))


if __name__ == "__main__":
    main()
