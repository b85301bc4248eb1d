"""What the system is doing: processes alive, queues, last runs, failures, size (系统状态, /readyz, doctor).

Reasons given to load balancers and operators (``/readyz``, ``crm doctor``) are in English, like logs.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from crm import clock
from crm.extensions import db

log = logging.getLogger(__name__)

# A process whose last heartbeat is older than this is shown as down (rq beats every few seconds, the
# web every 30 s, the scheduler's database row every 30 s).
ALIVE_WITHIN = timedelta(seconds=90)


@dataclass
class Process:
    role: str  # web / worker / scheduler
    host: str
    pid: int | None
    seen_at: datetime | None
    source: str  # redis / database
    alive: bool = False


@dataclass
class Readiness:
    ok: bool
    reasons: list[str] = field(default_factory=list)


def version() -> str:
    try:
        return metadata.version("gonghai-crm")
    except metadata.PackageNotFoundError:
        return "dev"


def redis_connection():
    """The app's Redis client, or None when none is reachable (never starts the embedded server here)."""
    from crm import queues

    url = current_app.config.get("REDIS_URL")
    if not url:
        from crm import embedded_redis

        if not embedded_redis.is_running(current_app.instance_path):
            return None
        url = embedded_redis.url_for(current_app.instance_path)
    return queues.connect(url)


def database_ok() -> str | None:
    """None when the database answers, else why not."""
    try:
        db.session.execute(text("SELECT 1"))
        return None
    except SQLAlchemyError as exc:
        db.session.rollback()
        return f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"


@functools.cache
def code_heads() -> frozenset[str]:
    """The migration heads of the code (read once per process: the code does not change under it)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent.parent / "migrations"))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def migrations_state() -> tuple[str | None, frozenset[str]]:
    """(why the schema is not at the code's head revision, or None; the heads). Cheap: one SELECT, so a
    load balancer may probe ``/readyz`` every second."""
    heads = code_heads()
    try:
        current = set(db.session.scalars(text("SELECT version_num FROM alembic_version")))
    except SQLAlchemyError:  # no alembic_version table: never migrated
        current = set()
    finally:
        db.session.rollback()
    if current != heads:
        shown = ", ".join(sorted(current)) or "none"
        return (
            f"migrations: database at {shown}, code at {', '.join(sorted(heads))} "
            "(run: flask --app app crm init-db)",
            heads,
        )
    return None, heads


def redis_ok() -> str | None:
    try:
        conn = redis_connection()
        if conn is None:
            return "redis: the embedded server is not running and REDIS_URL is not set"
        conn.ping()
        return None
    except Exception as exc:  # RedisError, OSError: anything that means "not reachable"
        return f"redis: {exc.__class__.__name__}: {exc}"


def readiness() -> Readiness:
    reasons = [r for r in (database_ok(), redis_ok()) if r]
    if not any(r.startswith("database") for r in reasons):
        behind, _heads = migrations_state()
        if behind:
            reasons.append(behind)
    return Readiness(not reasons, reasons)


def processes(now: datetime | None = None) -> list[Process]:
    """Every web, worker and scheduler process that beat in the last day: rq's own registries in Redis
    (workers and cron schedulers) and the database's heartbeat rows, one entry per process."""
    from crm.ops.runs import all_beats

    now = now or clock.now()
    found: dict[tuple[str, str, int | None], Process] = {}
    try:
        for beat in all_beats():
            found[(beat.role, beat.host, beat.pid)] = Process(
                beat.role, beat.host, beat.pid, beat.seen_at, "database"
            )
    except SQLAlchemyError:
        db.session.rollback()
    try:
        conn = redis_connection()
        if conn is not None:
            from rq import Worker
            from rq.cron import CronScheduler

            for worker in Worker.all(connection=conn):
                seen = worker.last_heartbeat.replace(tzinfo=UTC) if worker.last_heartbeat else None
                found[("worker", worker.hostname or "?", worker.pid)] = Process(
                    "worker", worker.hostname or "?", worker.pid, seen, "redis"
                )
            for scheduler in CronScheduler.all(connection=conn):
                key = ("scheduler", scheduler.hostname, int(scheduler.pid))
                seen = scheduler.last_heartbeat
                if key not in found or (seen and (found[key].seen_at or seen) <= seen):
                    found[key] = Process("scheduler", scheduler.hostname, int(scheduler.pid), seen, "redis")
    except Exception:  # Redis down: the database rows are what we have
        log.info("Redis not reachable for the process list", exc_info=True)
    for proc in found.values():
        proc.alive = proc.seen_at is not None and now - proc.seen_at <= ALIVE_WITHIN
    return sorted(found.values(), key=lambda p: (p.role, not p.alive, p.host, p.pid or 0))


def running_elsewhere(now: datetime | None = None) -> list[Process]:
    """Processes of this app alive now (``crm restore`` refuses while there are any)."""
    return [p for p in processes(now) if p.alive]


def queue_depths() -> dict[str, int] | None:
    from rq import Queue

    from crm.queues import QUEUES

    try:
        conn = redis_connection()
        if conn is None:
            return None
        return {name: Queue(name, connection=conn).count for name in QUEUES}
    except Exception:
        return None


def delivery_failures() -> dict[str, int]:
    from crm.models import DeliveryStatus, ReminderDelivery

    rows = db.session.execute(
        select(ReminderDelivery.status, func.count())
        .where(ReminderDelivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.GAVE_UP]))
        .group_by(ReminderDelivery.status)
    ).all()
    return {status: n for status, n in rows}


def database_size() -> int | None:
    """Bytes on disk: the SQLite file (+ WAL) or ``pg_database_size``."""
    try:
        if db.engine.dialect.name == "postgresql":
            return int(db.session.scalar(text("SELECT pg_database_size(current_database())")))
        path = Path(db.engine.url.database or "")
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    except (SQLAlchemyError, OSError):
        db.session.rollback()
        return None


def last_sweep():
    from crm.models import SweepRun

    return db.session.scalar(
        select(SweepRun).where(SweepRun.dry_run.is_(False)).order_by(SweepRun.id.desc()).limit(1)
    )


def snapshot() -> dict:
    """Everything the 系统状态 page shows."""
    from crm.ops import backup
    from crm.ops.runs import HOST, job_status

    now = clock.now()
    latest = backup.latest_backup()
    jobs = job_status()
    procs = processes(now)
    if not any(p.role == "web" and p.host == HOST and p.pid == os.getpid() for p in procs):
        # The process answering this request is alive, whether or not its heartbeat row is written yet.
        procs.insert(0, Process("web", HOST, os.getpid(), now, "this request", alive=True))
    return {
        "now": now,
        "version": version(),
        "readiness": readiness(),
        "processes": procs,
        "queues": queue_depths(),
        "sweep": last_sweep(),
        "jobs": jobs,
        "dispatch": jobs.get("dispatch_due"),
        "backup_job": jobs.get("backup"),
        "backup": latest,
        "backup_stale": latest is None or now - latest.taken_at > backup.STALE_AFTER,
        "failures": delivery_failures(),
        "db_size": database_size(),
        "db_kind": db.engine.dialect.name,
    }
