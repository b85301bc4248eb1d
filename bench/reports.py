"""Benchmark of the dashboard panels (crm/reports): 1,000,000 customers, 2,500,000 ledger rows and 2,500,000
follow-ups (5,000,000 together), 500,000 stage changes and 100,000 opportunities, built with set-based
``INSERT … SELECT`` (recursive CTE on SQLite, ``generate_series`` on PostgreSQL).

For each panel it measures the p95 of the panel's queries (the service function the fragment calls) for an
admin (everyone) and a manager (one team of 20) over 近30天, and compares it with a baseline in the same
process: a bare ``COUNT(*)`` over the follow-ups table. Then the full dashboard page plus all its fragments
are fetched through the app and their size on the wire is reported (raw and gzip).

Usage: ``python bench/reports.py [--db sqlite|postgresql|both] [--scale 1.0] [--runs 9] [--keep]``
(``--scale 0.1`` builds a tenth of everything). PostgreSQL uses ``$BENCH_DATABASE_URL`` or
``postgresql+psycopg://postgres@127.0.0.1/crm_bench_test_reports``. Targets: each panel ≤ 500 ms p95, the
page ≤ 150 KB.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 3, 16, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
SPAN = 730 * 86400  # two years of history, in seconds
REPS, TEAMS, POOLS = 200, 10, 10
CHANNELS = ["公众号", "投放", "展会", "官网", "转介绍", "电销", "抖音", "其他"]
SQLITE_PATH = Path("/tmp/crm_bench_reports/bench.db")
PG_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/crm_bench_test_reports"
)
PANELS = ("funnel", "reps", "heatmap", "pools", "channels")


def _app(url: str):
    from crm import create_app

    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
                       "INSTANCE_PATH": "/tmp/crm_bench_reports/instance", "WTF_CSRF_ENABLED": False})  # fmt: skip


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _series(dialect: str, n: int) -> tuple[str, str]:
    """(prefix, FROM clause) producing integers i = 1 … n."""
    if dialect == "sqlite":
        return (
            f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(n)}) ",
            "FROM s",
        )
    return "", f"FROM generate_series(CAST(1 AS bigint), {int(n)}) AS s(i)"


def _ago(dialect: str, seconds_expr: str) -> str:
    """NOW minus an integer SQL expression of seconds, as a stored timestamp."""
    if dialect == "sqlite":
        return f"strftime('%Y-%m-%d %H:%M:%f000', :now, '-' || ({seconds_expr}) || ' seconds')"
    return f"(CAST(:now AS timestamp) - make_interval(secs => ({seconds_expr})))"


def build(url: str, dialect: str, scale: float) -> dict:
    """Schema, defaults, teams, reps, pools and the bulk rows; returns the row counts."""
    from sqlalchemy import text

    from crm.bootstrap import ensure_defaults
    from crm.extensions import db
    from crm.models import Pool, Team, User

    n_cust, n_led, n_fu = int(1_000_000 * scale), int(2_500_000 * scale), int(2_500_000 * scale)
    n_sc, n_opp = int(500_000 * scale), int(100_000 * scale)
    app = _app(url)
    with app.app_context():
        db.drop_all()
        db.create_all()
        ensure_defaults(db.session, NOW)
        old = NOW - timedelta(days=800)
        admin = User(email="admin@bench.cn", name="管理员", password_hash="x", role="admin", regions=[], skills=[],
                     notify_prefs={}, created_at=old)  # fmt: skip
        db.session.add(admin)
        teams = []
        for t in range(TEAMS):
            manager = User(email=f"m{t}@bench.cn", name=f"主管{t}", password_hash="x", role="manager",
                           regions=[], skills=[], notify_prefs={}, created_at=old)  # fmt: skip
            team = Team(name=f"{t}组", manager=manager)
            manager.team = team
            db.session.add_all([manager, team])
            teams.append(team)
        db.session.flush()
        db.session.execute(
            User.__table__.insert(),
            [{"email": f"rep{i}@bench.cn", "name": f"销售{i}", "password_hash": "x", "role": "rep", "active": True,
              "regions": [], "skills": [], "notify_prefs": {}, "session_version": 1, "claim_seq": 0,
              "team_id": teams[i % TEAMS].id, "created_at": old} for i in range(REPS)],
        )  # fmt: skip
        for p in range(POOLS):
            db.session.add(Pool(name=f"公海{p}", created_at=old, release_times=[], prev_owner_rule="none"))
        db.session.commit()
        u0 = db.session.scalar(text("SELECT min(id) FROM users WHERE email LIKE 'rep%'"))
        p0 = db.session.scalar(text("SELECT min(id) FROM pools"))
        s0 = db.session.scalar(text("SELECT min(id) FROM stages"))
        params = {"now": _ts(NOW), "u0": u0, "p0": p0, "s0": s0}
        if dialect == "postgresql":
            params = {**params, "now": NOW.replace(tzinfo=None)}
        chan = "CASE i % 8 " + " ".join(f"WHEN {k} THEN '{c}'" for k, c in enumerate(CHANNELS)) + " END"
        started = time.perf_counter()
        pre, src = _series(dialect, n_cust)
        arrived = _ago(dialect, f"(i * 7919) % {SPAN}")
        won = _ago(dialect, f"(i * 7919) % {SPAN} - 86400 * 20")
        db.session.execute(text(
            pre + "INSERT INTO customers (name, name_key, kind, lifecycle, utm, arrived_at, score, grade, "
            "score_breakdown, is_hot, owner_id, pool_id, holding_no, claimed_at, pool_entered_at, holding_followups, "
            "senior_only, extension_days, channel, won_at, created_at, updated_at) "
            f"SELECT '基准客户' || i, 'bench' || i, 'company', 'customer', '{{}}', {arrived}, (i * 7) % 100, 'B', "
            f"'{{}}', false, CASE WHEN i % 10 < 7 THEN :u0 + (i % {REPS}) END, :p0 + (i % {POOLS}), 1, "
            f"CASE WHEN i % 10 < 7 THEN {arrived} END, CASE WHEN i % 10 >= 7 THEN {arrived} END, 0, false, 0, "
            f"{chan}, CASE WHEN i % 20 = 0 THEN {won} END, {arrived}, {arrived} {src}"
        ), params)  # fmt: skip
        # Ledger: kinds in a cycle; pool from the customer; a user on claims (to) and releases (from).
        kinds = [
            "created",
            "claimed",
            "released",
            "recycled",
            "assigned",
            "claimed",
            "warned",
            "auto_assigned",
        ]
        kind = "CASE i % 8 " + " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(kinds)) + " END"
        cust = f"(1 + (i * 7) % {n_cust})"
        pre, src = _series(dialect, n_led)
        db.session.execute(text(
            pre + "INSERT INTO pool_events (customer_id, kind, at, actor_system, from_user_id, to_user_id, pool_id, "
            "reason, holding_no) "
            f"SELECT {cust}, {kind}, {_ago(dialect, f'(i * 104729) % {SPAN}')}, 'bench', "
            f"CASE WHEN i % 8 IN (2, 3) THEN :u0 + (i % {REPS}) END, "
            f"CASE WHEN i % 8 IN (1, 4, 5, 7) THEN :u0 + (i % {REPS}) END, :p0 + ({cust} % {POOLS}), "
            f"CASE WHEN i % 8 = 3 THEN '规则' || (i % 5) END, 1 {src}"
        ), params)  # fmt: skip
        pre, src = _series(dialect, n_fu)
        fu_at = _ago(dialect, f"(i * 15485863) % {SPAN}")
        db.session.execute(text(
            pre + "INSERT INTO followups (customer_id, user_id, at, channel, content, goal_met, next_plan, "
            "next_contact_at, holding_no, score_at, is_fake, over_cap) "
            f"SELECT 1 + (i * 13) % {n_cust}, :u0 + (i % {REPS}), {fu_at}, 'phone', '电话沟通', false, '再联系', "
            f"{fu_at}, 1, (i * 7) % 100, i % 50 = 0, false {src}"
        ), params)  # fmt: skip
        pre, src = _series(dialect, n_sc)
        db.session.execute(text(
            pre + "INSERT INTO stage_changes (customer_id, from_stage_id, to_stage_id, user_id, at) "
            f"SELECT 1 + (i * 17) % {n_cust}, CASE WHEN i % 7 > 0 THEN :s0 + (i % 7) - 1 END, :s0 + (i % 7), "
            f":u0 + (i % {REPS}), {_ago(dialect, f'(i * 1299709) % {SPAN}')} {src}"
        ), params)  # fmt: skip
        pre, src = _series(dialect, n_opp)
        closed = _ago(dialect, f"(i * 7919) % {SPAN}")
        db.session.execute(text(
            pre + "INSERT INTO opportunities (customer_id, owner_id, name, stage_id, amount, status, from_pool, "
            "stage_changed_at, created_at, closed_at) "
            f"SELECT 1 + (i * 19) % {n_cust}, :u0 + (i % {REPS}), '商机' || i, :s0 + 5, (i % 100) * 1000, "
            f"CASE i % 3 WHEN 0 THEN 'won' WHEN 1 THEN 'lost' ELSE 'open' END, i % 2 = 0, {closed}, {closed}, "
            f"CASE WHEN i % 3 < 2 THEN {closed} END {src}"
        ), params)  # fmt: skip
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        seconds = time.perf_counter() - started
        db.engine.dispose()
    return {"customers": n_cust, "ledger": n_led, "followups": n_fu, "stage_changes": n_sc,
            "opportunities": n_opp, "build_s": round(seconds, 1)}  # fmt: skip


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def measure(url: str, runs: int, use_rollup: bool) -> dict:
    """p95 per panel (admin and manager), the baseline, and the page weight; with the daily rollup built
    (``use_rollup``, its build time reported) or without it (everything live)."""
    from sqlalchemy import delete, select, text

    from crm import clock
    from crm.extensions import db
    from crm.models import ReportRollup, User
    from crm.reports import rollup, services
    from crm.reports.filters import parse_filter

    app = _app(url)
    out: dict = {"panels": {}}
    with app.app_context(), clock.frozen(NOW):
        db.create_all()  # tables added since the data was built (only missing ones)
        from sqlalchemy.schema import CreateIndex

        with db.engine.begin() as conn:  # and indexes added since (kept when present)
            for table in db.metadata.sorted_tables:
                for index in table.indexes:
                    conn.execute(CreateIndex(index, if_not_exists=True))
        if (
            db.engine.dialect.name == "postgresql"
        ):  # all-visible pages for index-only scans, as autovacuum would
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            with db.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")  # statistics for the new indexes too
        if use_rollup:
            t0 = time.perf_counter()
            built = rollup.build(db.session, NOW, rebuild=True)
            db.session.commit()
            out["rollup"] = {**built, "seconds": round(time.perf_counter() - t0, 1)}
            t0 = time.perf_counter()
            rollup.build(db.session, NOW)
            db.session.commit()
            out["rollup"]["incremental_s"] = round(time.perf_counter() - t0, 2)
        else:
            db.session.execute(delete(ReportRollup))
            db.session.commit()
        admin = db.session.scalar(select(User).where(User.email == "admin@bench.cn"))
        manager = db.session.scalar(select(User).where(User.email == "m0@bench.cn"))

        def timed(fn) -> list[float]:
            fn()  # warm the cache once
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1000)
                db.session.rollback()
            return samples

        base = _p95(timed(lambda: db.session.execute(text("SELECT count(*) FROM followups")).scalar()))
        out["baseline_ms"] = round(base, 1)
        for who, user in (("admin", admin), ("manager", manager)):
            f = parse_filter(db.session, {"preset": "30d"}, user, NOW)
            for panel in PANELS:
                p95 = _p95(timed(lambda panel=panel, f=f: services.COMPUTE[panel](db.session, f)))
                out["panels"][f"{panel}/{who}"] = {"p95_ms": round(p95, 1), "ratio": round(p95 / base, 2)}
        client = app.test_client()
        with client.session_transaction() as sess:
            sess["_user_id"] = admin.get_id()
            sess["_fresh"] = True
        raw = gz = 0
        page = client.get("/reports/?preset=30d")
        assert page.status_code == 200, page.status_code
        bodies = [page.get_data()]
        for panel in PANELS:
            resp = client.get(f"/reports/panel/{panel}?preset=30d", headers={"HX-Request": "true"})
            assert resp.status_code == 200, (panel, resp.status_code)
            bodies.append(resp.get_data())
        raw = sum(len(b) for b in bodies)
        gz = sum(len(gzip.compress(b)) for b in bodies)
        out["page_kb"] = round(raw / 1024, 1)
        out["page_gzip_kb"] = round(gz / 1024, 1)
    return out


def run(
    dialect: str, scale: float, runs: int, keep: bool, build_only: bool = False, rollup_only: bool = False
) -> None:
    if dialect == "sqlite":
        SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{SQLITE_PATH}"
        if not (keep and SQLITE_PATH.exists()):
            SQLITE_PATH.unlink(missing_ok=True)
            print(dialect, "build", build(url, dialect, scale), flush=True)
    else:
        url = PG_URL
        if not keep:
            print(dialect, "build", build(url, dialect, scale), flush=True)
    if build_only:
        return
    for use_rollup in (True,) if rollup_only else (False, True):
        report(dialect, measure(url, runs, use_rollup), use_rollup)


def report(dialect: str, result: dict, use_rollup: bool) -> None:
    mode = "with daily rollup" if use_rollup else "all live (no rollup)"
    print(f"{dialect} [{mode}]: baseline COUNT(*) followups p95 {result['baseline_ms']} ms")
    if "rollup" in result:
        print(f"  rollup build: {result['rollup']}")
    worst = 0.0
    for name, r in result["panels"].items():
        worst = max(worst, r["p95_ms"])
        flag = "ok" if r["p95_ms"] <= 500 else "OVER"
        print(f"  {name:18s} p95 {r['p95_ms']:8.1f} ms  ratio {r['ratio']:6.2f}x  {flag}")
    print(f"  page + fragments: {result['page_kb']} KB raw, {result['page_gzip_kb']} KB gzip "
          f"({'ok' if result['page_kb'] <= 150 else 'OVER'}); worst panel {worst:.1f} ms", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="measure the data built by an earlier run")
    parser.add_argument("--build-only", action="store_true", help="build the data set and stop")
    parser.add_argument("--rollup-only", action="store_true", help="skip the all-live measurement")
    args = parser.parse_args()
    for dialect in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        run(dialect, args.scale, args.runs, args.keep, args.build_only, args.rollup_only)


if __name__ == "__main__":
    main()
