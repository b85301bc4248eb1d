"""RQ job functions: load ids, call a service, commit. Every job is idempotent (safe to run again).

Jobs run inside the Flask app context of the worker process (``app_job``), created once per process.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

_app = None


def get_app():
    """The worker's app, created once per process."""
    global _app
    if _app is None:
        from crm import create_app

        _app = create_app()
    return _app


def app_job(func: Callable) -> Callable:
    """Run ``func`` inside an app context; roll back on error so the next job starts clean; one log line and
    the outcome remembered for the status page (``crm.ops.runs.observe_job``)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from flask import has_app_context

        if has_app_context():  # tests run jobs inside their own app
            return func(*args, **kwargs)
        with get_app().app_context():
            from crm.extensions import db
            from crm.ops.runs import observe_job

            with observe_job(func.__name__):
                try:
                    return func(*args, **kwargs)
                except Exception:
                    db.session.rollback()
                    raise
                finally:
                    db.session.remove()

    return wrapper


@app_job
def heartbeat() -> str:
    """A trivial job the scheduler enqueues so operators can see the worker is alive and reaches the
    database: it writes the worker's heartbeat row (系统状态) and a log line every minute."""
    from sqlalchemy import text

    from crm import clock
    from crm.extensions import db

    db.session.execute(text("SELECT 1"))
    from crm.ops.runs import beat

    beat("worker", pid=os.getppid())  # run in rq's work horse: its parent is the worker
    stamp = clock.now().isoformat()
    logging.getLogger("crm.worker").info("heartbeat: database reachable at %s", stamp)
    return stamp


@app_job
def recycle_sweep(as_of: str | None = None) -> dict:
    """The recycle sweep (issue 5): recycle what is due now, send due warnings/escalations. Idempotent;
    works from "now", so a worker that was down catches up on its next run."""
    from crm import clock
    from crm.extensions import db
    from crm.recycle.sweep import sweep

    at = clock.parse_iso(as_of) if as_of else clock.now()
    result = sweep(db.session, at)
    return {"run_id": result.run_id, "recycled": result.recycled, "warned": result.warned,
            "escalated": result.escalated}  # fmt: skip


@app_job
def abandon_stale_sweeps() -> int:
    """The periodic check for sweeps that died: runs "running" far longer than any sweep takes are marked
    abandoned in the run log (the next sweep also marks every dead run as it starts)."""
    from crm import clock
    from crm.extensions import db
    from crm.recycle.sweep import abandon_stale

    return abandon_stale(db.session, clock.now())


@app_job
def dispatch_due(budget_seconds: float = 50.0) -> dict:
    """Fan out due reminders and send them (exactly once per reminder, channel and round; see
    ``crm.reminders.dispatch``). Safe to run in several workers at once."""
    from crm.extensions import db
    from crm.reminders.dispatch import dispatch_pass

    report = dispatch_pass(db.session, budget_seconds=budget_seconds)
    return {"fanned_out": report.fanned_out, "sent": report.count("sent"), "failed": report.count("failed")}


@app_job
def send_due() -> int:
    """Send already fanned-out deliveries only (extra workers drain a large backlog with this)."""
    from crm.extensions import db
    from crm.reminders.dispatch import send_due as send

    return len(send(db.session))


@app_job
def generate_reminders() -> dict:
    """Generate reminders from every source and escalate overdue ones (set-based, idempotent)."""
    from crm import clock
    from crm.extensions import db
    from crm.reminders.generate import generate_all

    made = generate_all(db.session, clock.now())
    db.session.commit()
    return {"created": made.created, "escalated": made.escalated, "cancelled": made.cancelled}


@app_job
def sample_spot_checks() -> int:
    """Give each manager yesterday's spot-check sample (idempotent per day, so it can run hourly)."""
    from crm import clock
    from crm.extensions import db
    from crm.followups.spotcheck import sample_daily

    added = sample_daily(db.session, clock.now())
    db.session.commit()
    return added


@app_job
def recompute_scores() -> dict:
    """Nightly (intake/scoring): recompute every score so behaviour points decay, refresh the name-gram
    statistics the fuzzy check orders by, drop old public-form rate-limit hits and used tokens, and ended
    sign-ins. Idempotent."""
    from crm import clock
    from crm.auth import sessions
    from crm.extensions import db
    from crm.intake import grams, public
    from crm.scoring import services

    now = clock.now()
    result = services.recompute_all(db.session, now)
    result["name_grams"] = grams.refresh_stats(db.session)
    result["rate_limit_hits_purged"] = public.purge_hits(db.session, now)
    result["sign_ins_purged"] = sessions.purge(db.session, now)
    db.session.commit()
    return result


@app_job
def rollup_reports(rebuild: bool = False) -> dict:
    """Dashboards: bring the daily pool rollup up to yesterday (recomputes the last days; idempotent)."""
    from crm import clock
    from crm.extensions import db
    from crm.reports.rollup import build

    result = build(db.session, clock.now(), rebuild=rebuild)
    db.session.commit()
    return result


@app_job
def weekly_digest() -> int:
    """上周公海复盘 to managers and admins as a reminder (delivered by dispatch); once per user and week, so
    running it hourly on Mondays, or again after downtime, sends nothing twice."""
    from crm import clock
    from crm.extensions import db
    from crm.reports.review import send_weekly_digest

    made = send_weekly_digest(db.session, clock.now())
    db.session.commit()
    return made


@app_job
def check_possible_duplicates(customer_ids: list[int] | None = None) -> int:
    """The deferred similar-company check of leads taken in by the API (``intake(defer_fuzzy=True)``):
    opens their conflicts; idempotent (pairs already in the queue are skipped). Returns conflicts opened.

    Without ids it drains every pending check (``PendingDuplicateCheck``, written with the leads; one job
    for many requests, asked for by ``queues.nudge``), then waits ``queues.NUDGE_SECONDS`` and drains once
    more: a request that skipped its nudge because one was just made relies on this job to see its lead."""
    import time

    from crm import clock, queues
    from crm.extensions import db
    from crm.intake.services import DEFERRED_CHECK, drain_pending_checks
    from crm.intake.services import check_possible_duplicates as check

    if customer_ids is not None:
        opened = sum(len(pairs) for pairs in check(db.session, customer_ids, clock.now()).values())
        db.session.commit()
        return opened
    queues.nudge_taken(DEFERRED_CHECK)
    opened = drain_pending_checks(db.session, clock.now())
    time.sleep(queues.NUDGE_SECONDS)
    return opened + drain_pending_checks(db.session, clock.now())


@app_job
def nightly_backup() -> str:
    """Nightly backup (``crm backup``) into CRM_BACKUP_DIR, keeping the newest CRM_BACKUP_KEEP. By default only
    on SQLite (``CRM_BACKUP_NIGHTLY=auto``): PostgreSQL hosts usually back up with their own tools; set it to
    1 to have it here too (needs pg_dump), 0 to turn it off."""
    from flask import current_app

    from crm.extensions import db
    from crm.ops.cli import take_backup

    wanted = str(current_app.config.get("CRM_BACKUP_NIGHTLY", "auto")).lower()
    if wanted in ("0", "off", "false", "no") or (wanted == "auto" and db.engine.dialect.name != "sqlite"):
        return "skipped (CRM_BACKUP_NIGHTLY)"
    return take_backup()


@app_job
def run_task(task_id: int) -> str | None:
    """Run a background task (``crm.tasks``): its handler writes progress to the task row. A task that
    is not queued any more (cancelled, or already run) is left alone. Returns the task's final status."""
    from crm.extensions import db
    from crm.tasks.services import execute

    task = execute(db.session, task_id)
    return task.status if task is not None else None


@app_job
def watch_tasks() -> dict:
    """Background-task watchdog: tasks whose worker died are marked failed (retry button), tasks started
    while Redis was down are handed to the worker."""
    from crm import clock
    from crm.extensions import db
    from crm.tasks.services import watch

    return watch(db.session, clock.now())
