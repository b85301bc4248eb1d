"""Several schedulers, one enqueue per tick: rq's ``CronScheduler`` with a Redis ``SET NX`` per job and tick.

Each scheduler keeps its own clock (rq has no leader election), so two of them would enqueue every job
twice. Before enqueuing, a scheduler claims the job's tick in Redis; the loser skips it but still moves its
own clock on. The tick of an ``interval`` job is ``floor(epoch / interval)``; of a ``cron`` job, its
scheduled instant (the same for every scheduler). A lock lives for the job's period (at least a minute).
"""

from __future__ import annotations

import logging
import math
import time

from rq.cron import CronJob, CronScheduler

log = logging.getLogger("crm.scheduler")
LOCK_PREFIX = "crm:cron:tick:"


def tick_key(job: CronJob, at: float | None = None) -> tuple[str, int]:
    """The Redis key naming this job's current tick, and how long the claim should live (seconds)."""
    if job.cron:
        scheduled = job.next_enqueue_time.timestamp() if job.next_enqueue_time else time.time()
        return f"{LOCK_PREFIX}{job.name}:{int(scheduled)}", 3600
    interval = int(job.interval or 60)
    tick = math.floor((at if at is not None else time.time()) / interval)
    return f"{LOCK_PREFIX}{job.name}:{interval}:{tick}", max(interval, 60)


def claim_tick(connection, job: CronJob, at: float | None = None) -> bool:
    key, ttl = tick_key(job, at)
    return bool(connection.set(key, "1", nx=True, ex=ttl))


class OnePerTickScheduler(CronScheduler):
    """A ``CronScheduler`` that enqueues a job only when it won the job's tick, and whose heartbeat also
    goes to the database (``OpsHeartbeat``, for the status page when Redis itself is the problem)."""

    heartbeat_every = 30.0
    _last_db_beat = 0.0

    def enqueue_jobs(self) -> list[CronJob]:
        from rq.utils import now

        enqueue_time = now()
        enqueued: list[CronJob] = []
        for job in self._cron_jobs:
            if not job.should_run():
                continue
            if claim_tick(self.connection, job):
                job.enqueue(self.connection)
                enqueued.append(job)
            else:
                log.debug("%s: this tick was enqueued by another scheduler", job.name)
            job.set_enqueue_time(enqueue_time)
        return enqueued

    def heartbeat(self) -> None:
        super().heartbeat()
        if time.monotonic() - self._last_db_beat < self.heartbeat_every:
            return
        self._last_db_beat = time.monotonic()
        try:
            from crm.ops.runs import beat
            from workers.jobs import get_app

            with get_app().app_context():
                beat("scheduler")
        except Exception:  # the database being down must not stop the schedule
            log.warning("could not write the scheduler heartbeat to the database", exc_info=True)
