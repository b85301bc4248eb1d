"""Several schedulers, one enqueue per job and tick (``crm.ops.cron_lock``)."""

from __future__ import annotations

import pytest
from rq.cron import CronJob

from crm import queues
from crm.ops.cron_lock import LOCK_PREFIX, OnePerTickScheduler, claim_tick
from workers import jobs


@pytest.fixture
def conn(app):
    conn = queues.get_redis()
    for name in queues.QUEUES:
        queues.get_queue(name).empty()
    for key in conn.scan_iter(f"{LOCK_PREFIX}*"):
        conn.delete(key)
    yield conn
    for name in queues.QUEUES:
        queues.get_queue(name).empty()


def test_two_schedulers_started_together_enqueue_each_interval_job_once(conn):
    first, second = (OnePerTickScheduler(connection=conn) for _ in range(2))
    for scheduler in (first, second):
        scheduler.load_config_from_file("workers.cron")
    interval_jobs = [j.func_name for j in first.get_jobs() if j.interval]
    enqueued = [j.func_name for j in first.enqueue_jobs()] + [j.func_name for j in second.enqueue_jobs()]
    assert sorted(enqueued) == sorted(interval_jobs)
    queued = [job.func_name for q in queues.QUEUES for job in queues.get_queue(q).jobs]
    assert sorted(queued) == sorted(interval_jobs)
    # The loser moved its own clock on too: it does not try again before its next period.
    assert all(not job.should_run() for job in second.get_jobs() if job.interval)


def test_a_tick_is_claimed_once_and_the_next_tick_is_free_again(conn):
    job = CronJob(queue_name="default", func=jobs.heartbeat, interval=60)
    assert claim_tick(conn, job, at=6000.0)
    assert not claim_tick(conn, job, at=6059.0)  # same minute: another scheduler already enqueued it
    assert claim_tick(conn, job, at=6060.0)


def test_a_cron_job_tick_is_its_scheduled_instant(conn):
    job = CronJob(queue_name="default", func=jobs.nightly_backup, cron="15 3 * * *")
    other = CronJob(queue_name="default", func=jobs.nightly_backup, cron="15 3 * * *")
    assert claim_tick(conn, job)
    assert not claim_tick(conn, other)
