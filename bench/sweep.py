"""Benchmark of the recycle sweep: 1,000,000 owned customers in one pool, 100,000 of them due.

For each database (SQLite file under /tmp, PostgreSQL database ``crm_bench_recycle``) it builds the data once
with set-based inserts, then on fresh copies of the same data measures:

- the sweep (``crm.recycle.sweep.sweep``: recycle + ledger + 高难度 + warnings/escalations), in a child
  process whose peak RSS is reported;
- one hand-written ``UPDATE`` doing only the owner change for the same rows (same due condition);
- the ratio of the two (target ≤ 2×, and ≤ 30 s absolute);
- the rule preview (规则预演) for the 1,000,000-customer pool (target ≤ 1 s).

Usage: ``python bench/sweep.py [--db sqlite|postgresql|both] [--customers N] [--due N] [--rebuild]``. The data
is built once and reused (``--rebuild`` after a schema change); ``CRM_BENCH_SQLITE_DIR`` and ``CRM_BENCH_PG_DB``
(must contain "bench") override where it lives, so two checkouts on one machine do not share it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 3, 16, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
# Names can be overridden so that several checkouts can bench on one machine without clobbering each other.
SQLITE_DIR = Path(os.environ.get("CRM_BENCH_SQLITE_DIR", "/tmp/crm_bench_recycle"))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1/postgres"
PG_TEMPLATE = os.environ.get("CRM_BENCH_PG_DB", "crm_bench_recycle")
PG_RUN = PG_TEMPLATE + "_run"
if "bench" not in PG_TEMPLATE:
    raise SystemExit("CRM_BENCH_PG_DB must contain 'bench' (the bench drops and recreates it)")
REPS = 500
WARNED = 20_000  # customers inside the 2-day warning window (owners get a warning; some an escalation)


def _app(url: str, tmp: Path):
    from crm import create_app

    return create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "INSTANCE_PATH": str(tmp), "SECRET_KEY": "bench"}
    )


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def build(url: str, dialect: str, customers: int, due: int) -> None:
    """Schema, defaults, 500 reps, one pool with two rules, and ``customers`` owned customers."""
    from sqlalchemy import text

    from crm.bootstrap import ensure_defaults
    from crm.extensions import db
    from crm.models import Pool, RecycleRule, User

    app = _app(url, Path("/tmp/crm_bench_recycle_instance"))
    with app.app_context():
        db.create_all()
        ensure_defaults(db.session, NOW)
        pool = Pool(
            name="基准公海", created_at=NOW - timedelta(days=365), release_times=[], prev_owner_rule="none"
        )
        db.session.add(pool)
        db.session.flush()
        db.session.execute(
            User.__table__.insert(),
            [
                {
                    "email": f"rep{i}@bench.cn",
                    "name": f"销售{i}",
                    "password_hash": "x",
                    "role": "rep",
                    "active": True,
                    "regions": [],
                    "skills": [],
                    "notify_prefs": {},
                    "session_version": 1,
                    "claim_seq": 0,
                    "created_at": NOW - timedelta(days=400),
                }  # fmt: skip
                for i in range(REPS)
            ],
        )
        for position, fields in enumerate(
            [
                dict(kind="no_followup", days=7, warn_days=2, escalate_days=1),
                dict(kind="no_first_contact", hours=48),
            ]
        ):
            db.session.add(
                RecycleRule(
                    pool_id=pool.id,
                    position=position,
                    day_kind="calendar",
                    created_at=NOW,
                    updated_at=NOW,
                    **fields,
                )  # fmt: skip
            )
        manager = User(email="manager@bench.cn", name="主管", password_hash="x", role="manager", regions=[],
                       skills=[], notify_prefs={}, created_at=NOW - timedelta(days=400))  # fmt: skip
        db.session.add(manager)
        db.session.flush()
        db.session.execute(
            text("UPDATE users SET manager_id = :m WHERE email LIKE 'rep%'"), {"m": manager.id}
        )
        db.session.commit()
        first_user = db.session.scalar(text("SELECT min(id) FROM users WHERE email LIKE 'rep%'"))
        # last_followup_at: the first `due` rows are 7–9 days old (due), the next WARNED 5.2–6.8 days (warning
        # window; those past 6 days also escalate to the reps' manager), the rest 0–4.9 days (not due).
        # Everyone had a first contact.
        claimed = _ts(NOW - timedelta(days=30))
        params = {"n": customers, "due": due, "warned": WARNED, "pool": pool.id, "u0": first_user, "reps": REPS,
                  "claimed": claimed, "now": _ts(NOW)}  # fmt: skip
        if dialect == "sqlite":
            followup = (
                "strftime('%Y-%m-%d %H:%M:%f000', :now, '-' || (CASE WHEN i <= :due THEN 604800 + (i * 37) % 172800 "
                "WHEN i <= :due + :warned THEN 449280 + (i * 37) % 138240 ELSE (i * 37) % 423360 END) || ' seconds')"
            )
            series = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
            source = "FROM s"
            stamp = lambda name: f":{name}"  # noqa: E731
        else:
            followup = (
                "(CAST(:now AS timestamp) - make_interval(secs => CASE WHEN i <= :due THEN 604800 + (i * 37) % 172800 "
                "WHEN i <= :due + :warned THEN 449280 + (i * 37) % 138240 ELSE (i * 37) % 423360 END))"
            )
            series = ""
            source = "FROM generate_series(1, :n) AS s(i)"
            stamp = lambda name: f"CAST(:{name} AS timestamp)"  # noqa: E731
        db.session.execute(
            text(
                series
                + "INSERT INTO customers (name, name_key, kind, lifecycle, utm, arrived_at, score, grade, "
                "score_breakdown, is_hot, owner_id, pool_id, holding_no, claimed_at, first_contact_at, "
                "last_followup_at, holding_followups, senior_only, extension_days, created_at, updated_at, "
                "last_stage_change_at) "
                "SELECT '基准客户' || i, 'bench' || i, 'company', 'customer', '{}', "
                + stamp("claimed")
                + ", "
                "(i * 7) % 100, CASE WHEN (i * 7) % 100 >= 80 THEN 'A' WHEN (i * 7) % 100 >= 50 THEN 'B' ELSE 'C' END, "
                "'{}', false, :u0 + (i % :reps), :pool, 1, "
                + stamp("claimed")
                + ", "
                + stamp("claimed")
                + ", "
                + followup
                + ", 1, false, 0, "
                + stamp("claimed")
                + ", "
                + stamp("claimed")
                + ", "
                + stamp("claimed")
                + " "
                + source
            ),
            params,
        )
        db.session.commit()
        if dialect == "postgresql":
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        else:
            db.session.execute(text("ANALYZE"))
            db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            db.session.commit()
        db.engine.dispose()


def child(mode: str, url: str) -> None:
    """Run one measurement in this (fresh) process and print JSON with the timing and peak RSS."""
    import resource

    from sqlalchemy import text

    from crm.extensions import db

    app = _app(url, Path("/tmp/crm_bench_recycle_instance"))
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        out: dict = {}
        if mode == "sweep":
            from crm.recycle.sweep import sweep

            started = time.perf_counter()
            result = sweep(db.session, NOW)
            out = {"seconds": time.perf_counter() - started, "recycled": result.recycled, "warned": result.warned,
                   "escalated": result.escalated}  # fmt: skip
        elif mode == "update":
            # The hand-written statement: only the owner change, for exactly the rows the 7-day rule makes due.
            cutoff = _ts(NOW - timedelta(days=7))
            cast = ":cutoff" if url.startswith("sqlite") else "CAST(:cutoff AS timestamp)"
            started = time.perf_counter()
            changed = db.session.execute(
                text(
                    "UPDATE customers SET owner_id = NULL WHERE owner_id IS NOT NULL AND "
                    "CASE WHEN last_followup_at > claimed_at THEN last_followup_at ELSE claimed_at END <= "
                    + cast
                ),
                {"cutoff": cutoff},
            ).rowcount
            db.session.commit()
            out = {"seconds": time.perf_counter() - started, "recycled": changed}
        elif mode == "preview":
            from crm.recycle import engine

            pool_id = db.session.scalar(text("SELECT id FROM pools WHERE name = '基准公海'"))
            rules = engine.active_rules(db.session, pool_id)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                result = engine.preview(db.session, pool_id, rules, NOW)
                times.append(time.perf_counter() - started)
                db.session.rollback()
            out = {"seconds": min(times), "all": times, "owned": result.owned, "due_now": result.due_now,
                   "warned_now": result.warned_now, "week": result.week_total}  # fmt: skip
        out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))


def _run_child(mode: str, url: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sqlite_copy(template: Path) -> str:
    run = SQLITE_DIR / "run.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(run) + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, run)
    return f"sqlite:///{run}"


def _pg(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def _pg_copy() -> str:
    _pg(f"DROP DATABASE IF EXISTS {PG_RUN}")
    _pg(f"CREATE DATABASE {PG_RUN} TEMPLATE {PG_TEMPLATE}")
    return f"postgresql+psycopg://postgres@127.0.0.1/{PG_RUN}"


def bench(dialect: str, customers: int, due: int, rebuild: bool) -> dict:
    print(f"== {dialect}: {customers:,} customers, {due:,} due", flush=True)
    started = time.perf_counter()
    if dialect == "sqlite":
        SQLITE_DIR.mkdir(exist_ok=True)
        template = SQLITE_DIR / f"template-{customers}-{due}.sqlite3"
        if rebuild or not template.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(str(template) + suffix).unlink(missing_ok=True)
            build(f"sqlite:///{template}", dialect, customers, due)
        fresh = lambda: _sqlite_copy(template)  # noqa: E731
        preview_url = f"sqlite:///{template}"
    else:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_ADMIN)
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": PG_TEMPLATE}
            ).scalar()
        engine.dispose()
        if rebuild or not exists:
            _pg(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}")
            _pg(f"CREATE DATABASE {PG_TEMPLATE}")
            build(f"postgresql+psycopg://postgres@127.0.0.1/{PG_TEMPLATE}", dialect, customers, due)
        fresh = _pg_copy
        preview_url = None
    print(f"   data ready in {time.perf_counter() - started:.1f} s", flush=True)
    update = _run_child("update", fresh())
    swept = _run_child("sweep", fresh())
    if dialect == "postgresql":
        preview_url = fresh()
    preview = _run_child("preview", preview_url)
    if dialect == "postgresql":
        _pg(f"DROP DATABASE IF EXISTS {PG_RUN}")
    ratio = swept["seconds"] / update["seconds"]
    print(f"   hand-written UPDATE (owner only): {update['seconds']:.2f} s, {update['recycled']:,} rows")
    print(f"   sweep: {swept['seconds']:.2f} s, recycled {swept['recycled']:,}, warned {swept['warned']:,}, "
          f"escalated {swept['escalated']:,}; peak RSS {swept['maxrss_mb']:.0f} MB")  # fmt: skip
    print(f"   ratio sweep / UPDATE: {ratio:.2f}x  (target <= 2x, <= 30 s)")
    print(f"   preview of the {preview['owned']:,}-customer pool: best {preview['seconds']:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in preview['all'])}); due now {preview['due_now']:,}, "
          f"warned now {preview['warned_now']:,}, within 7 days {preview['week']:,}")  # fmt: skip
    return {"dialect": dialect, "update": update, "sweep": swept, "ratio": ratio, "preview": preview}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--rebuild", action="store_true", help="Rebuild the data even if a copy exists.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("CRM_TIMEZONE", "Asia/Shanghai")
    if args.child:
        child(args.child, args.url)
        return
    dialects = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for dialect in dialects:
        bench(dialect, args.customers, args.due, args.rebuild)


if __name__ == "__main__":
    main()
