"""The last outcome of each kind of background work (``OpsJob``), and process heartbeats (``OpsHeartbeat``).

Both are written on a connection of their own, committed at once: a job that fails still leaves its
failure behind, and a request's or job's own transaction is never touched.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from crm import clock
from crm.extensions import db
from crm.models import OpsHeartbeat, OpsJob

HOST = socket.gethostname()
_STARTED = clock.now()


def _insert(table):
    return (postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert)(table)


def record_job(
    name: str, started: datetime, ok: bool, detail: str = "", finished: datetime | None = None
) -> None:
    """Remember the outcome of one run of ``name`` (one row per name: counts, last result, last success)."""
    finished = finished or clock.now()
    values = {"started_at": started, "finished_at": finished, "ok": ok, "detail": detail[:2000]}
    table = OpsJob.__table__
    stmt = _insert(table).values(
        name=name, runs=1, failures=0 if ok else 1, last_ok_at=finished if ok else None, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.name],
        set_={
            **values,
            "runs": table.c.runs + 1,
            "failures": table.c.failures + (0 if ok else 1),
            "last_ok_at": finished if ok else table.c.last_ok_at,
        },
    )
    with db.engine.begin() as conn:
        conn.execute(stmt)


def job_status() -> dict[str, OpsJob]:
    return {row.name: row for row in db.session.scalars(select(OpsJob))}


def beat(role: str, pid: int | None = None, host: str | None = None) -> None:
    """``role`` (web / worker / scheduler) on this host and pid is alive now."""
    now = clock.now()
    table = OpsHeartbeat.__table__
    stmt = _insert(table).values(
        role=role, host=host or HOST, pid=pid or os.getpid(), started_at=_STARTED, seen_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.role, table.c.host, table.c.pid], set_={"seen_at": now}
    )
    with db.engine.begin() as conn:
        conn.execute(stmt)
        # Processes gone for a day are forgotten (a restarted process has a new pid).
        conn.execute(table.delete().where(table.c.seen_at < now - timedelta(days=1)))


def recent_beats(within: timedelta, now: datetime | None = None) -> list[OpsHeartbeat]:
    now = now or clock.now()
    return list(
        db.session.scalars(
            select(OpsHeartbeat).where(OpsHeartbeat.seen_at >= now - within).order_by(OpsHeartbeat.role)
        )
    )


def all_beats() -> list[OpsHeartbeat]:
    return list(db.session.scalars(select(OpsHeartbeat).order_by(OpsHeartbeat.role, OpsHeartbeat.host)))


def install_web_heartbeat(app) -> None:
    """Each web process writes its heartbeat after a request at most every ``CRM_HEARTBEAT_SECONDS``
    (default 30; off under TESTING unless set), so ``crm restore`` and the status page see it running."""
    import time

    interval = app.config.get("CRM_HEARTBEAT_SECONDS", 0 if app.testing else 30)
    if not interval:
        return
    state = {"next": 0.0}

    @app.after_request
    def _web_heartbeat(response):
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + interval
            try:
                beat("web")
            except SQLAlchemyError as exc:  # the database being down must not fail the request
                app.logger.warning("could not write the web heartbeat: %s", str(exc).splitlines()[0])
        return response


@contextmanager
def observe_job(name: str):
    """Around one run of an rq job: remember its outcome (``OpsJob``) and log one line. Bookkeeping that
    fails (database down) is logged, never raised over the job's own result."""
    import time

    started, t0 = clock.now(), time.perf_counter()
    job_id = None
    try:
        from rq import get_current_job

        job = get_current_job()
        job_id = job.id if job is not None else None
    except Exception:  # not inside rq
        job_id = None
    try:
        yield
    except Exception as exc:
        _bookkeep(name, job_id, started, time.perf_counter() - t0, False, f"{exc.__class__.__name__}: {exc}")
        raise
    else:
        _bookkeep(name, job_id, started, time.perf_counter() - t0, True, "")


def _bookkeep(
    name: str, job_id: str | None, started: datetime, seconds: float, ok: bool, detail: str
) -> None:
    import logging

    from crm.ops.logs import log_job

    log_job(name, job_id, ok, seconds, detail)
    try:
        record_job(name, started, ok, detail)
    except SQLAlchemyError:
        logging.getLogger("crm.job").warning("could not record the outcome of %s", name, exc_info=True)
