"""Background work through rq: the only module that knows about Redis.

``enqueue`` never lets a Redis outage break a user's request: the database is the source of truth
(reminders, sweeps and rollups are found again by the periodic jobs), so a failed enqueue is logged
and the caller carries on. After a failure the app stops trying for ``REDIS_RETRY_SECONDS`` so that a
dead Redis costs one connect timeout, not one per request.

Connection: ``REDIS_URL`` when set, else the embedded server (``crm.embedded_redis``), started on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

log = logging.getLogger(__name__)

# "default": sweeps, scoring, rollups; "dispatch": reminder delivery (email, webhooks), kept apart so a
# slow SMTP server does not hold up the rest.
QUEUES = ("default", "dispatch")
REDIS_RETRY_SECONDS = 30.0


def redis_url() -> str:
    """``REDIS_URL``, or the embedded server's URL (started on first use when none is configured)."""
    url = current_app.config.get("REDIS_URL")
    if url:
        return url
    from crm.embedded_redis import ensure_running

    return ensure_running(current_app.instance_path)


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    from redis.connection import parse_url

    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if parse_url(url).get("password") else url


def connect(url: str) -> Redis:
    """A client with short timeouts: a web request must not hang on a dead Redis."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


# What a lost Redis raises (OSError: a socket error below redis-py; RuntimeError: the embedded server could
# not be started).
REDIS_ERRORS = (RedisError, OSError, RuntimeError)
# Background processes retry a lost Redis after 0.5 s, doubling up to this (``CRM_REDIS_RETRY_MAX`` seconds).
RETRY_MAX_SECONDS = 5.0


class Backoff:
    """Capped exponential backoff for a background process that lost a dependency: ``next()`` gives the
    wait before the next try (0.5 s doubling up to ``cap``), ``reset()`` after a success."""

    def __init__(self, first: float = 0.5, cap: float | None = None):
        import os

        self.first = first
        self.cap = (
            cap if cap is not None else float(os.environ.get("CRM_REDIS_RETRY_MAX") or RETRY_MAX_SECONDS)
        )
        self.current = first

    def next(self) -> float:
        wait = min(self.current, self.cap)
        self.current = min(self.current * 2, self.cap)
        return wait

    def reset(self) -> None:
        self.current = self.first


class Outage:
    """Log a lost dependency once when it goes and once when it is back (not once per retry)."""

    def __init__(self, log_to: logging.Logger, what: str = "Redis"):
        self.log, self.what = log_to, what
        self.since: float | None = None
        self.lock = threading.RLock()  # the pubsub thread reports too; a signal handler may, re-entrantly

    @property
    def down(self) -> bool:
        return self.since is not None

    def lost(self, exc: BaseException, retrying: str = "retrying with backoff") -> None:
        with self.lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.log.warning("%s not reachable (%s); %s", self.what, exc, retrying)

    def back(self) -> None:
        with self.lock:
            since, self.since = self.since, None
        if since is not None:
            self.log.warning("%s reachable again after %.1fs", self.what, time.monotonic() - since)


def wait_for_redis(
    app,
    log_to: logging.Logger,
    retry_seconds: float | None = None,
    give_up_after: float | None = None,
    outage: Outage | None = None,
    stop=None,
) -> tuple[Redis, str]:
    """Connect the worker or scheduler to the app's Redis, waiting (and saying so, once) while it is down.

    A process that exited instead would take its siblings down with it under honcho. ``outage`` carries
    the "Redis is down" state across reconnects (log once when it goes, once when it is back); ``stop``
    (a ``threading.Event``) ends the wait early (``InterruptedError``).
    """
    started = time.monotonic()
    outage = outage or Outage(log_to)
    backoff = Backoff(cap=retry_seconds)
    while True:
        try:
            with app.app_context():
                url = redis_url()
            connection = connect(url)
            connection.ping()
            outage.back()
            return connection, url
        except REDIS_ERRORS as exc:
            if give_up_after is not None and time.monotonic() - started > give_up_after:
                raise
            outage.lost(exc)
            wait = backoff.next()
            if stop is not None:
                if stop.wait(wait):
                    raise InterruptedError("stop requested while waiting for Redis") from exc
            else:
                time.sleep(wait)


def get_redis() -> Redis:
    """The app's Redis client (one per app and process)."""
    app = current_app._get_current_object()
    conn = app.extensions.get("crm_redis")
    if conn is None:
        conn = connect(redis_url())
        app.extensions["crm_redis"] = conn
    return conn


def get_queue(name: str = "default") -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r} (known: {', '.join(QUEUES)})")
    return Queue(name, connection=get_redis())


def enqueue(
    func: Callable | str, *args, queue: str = "default", job_id: str | None = None, **kwargs
) -> Job | None:
    """Enqueue a job; returns the rq Job, or None when Redis is unreachable (logged, not raised).

    ``args``/``kwargs`` are passed to ``rq.Queue.enqueue`` (so rq's options such as ``job_timeout`` or
    ``result_ttl`` work as there). With a ``job_id``, a job of that id still waiting or running is
    returned instead of enqueuing a second copy.
    """
    app = current_app._get_current_object()
    if _redis_down(app):
        log.info("skipped enqueue of %s: Redis was unreachable moments ago", _name(func))
        return None
    try:
        q = get_queue(queue)
        if job_id is not None:
            existing = _waiting_job(q, job_id)
            if existing is not None:
                return existing
        return q.enqueue(func, *args, job_id=job_id, **kwargs)
    except (RedisError, OSError, RuntimeError) as exc:
        _mark_down(app, _name(func), exc)
        return None


def _redis_down(app) -> bool:
    return time.monotonic() < app.extensions.get("crm_redis_down_until", 0.0)


def _mark_down(app, what: str, exc: Exception) -> None:
    # RuntimeError: the embedded server could not be started.
    app.extensions["crm_redis_down_until"] = time.monotonic() + REDIS_RETRY_SECONDS
    app.extensions.pop("crm_redis", None)
    log.warning("could not enqueue %s: %s (the periodic jobs will pick the work up)", what, exc)


# A nudged job's "pending" flag lives at most this long (a job lost before it started is asked for again).
NUDGE_FLAG_SECONDS = 60
# A process asks Redis about a nudged job at most this often; the job, once its work is done, looks once
# more after this long (see ``nudge``).
NUDGE_SECONDS = 1.0


def nudge(func: str, *, queue: str = "default") -> bool:
    """Make sure a ``func`` job runs soon, for work the caller committed to the database (the API's pending
    duplicate checks): one job for the work of many requests, and at most one Redis round trip per
    ``NUDGE_SECONDS`` per process — a feed of leads pays nothing per lead.

    Nothing is missed: the job clears the "pending" flag as it starts (``nudge_taken``), drains, then waits
    ``NUDGE_SECONDS`` and drains once more, so work committed by a request that skipped its nudge (this
    process nudged less than ``NUDGE_SECONDS`` before) is still seen by the job that nudge asked for; the
    periodic run catches anything else. Returns False when Redis is unreachable (the caller does the work)."""
    app = current_app._get_current_object()
    if _redis_down(app):
        return False
    last = app.extensions.setdefault("crm_nudged", {})
    now = time.monotonic()
    if func in last and now - last[func] < NUDGE_SECONDS:
        return True
    try:
        if get_redis().set(_flag_key(func), 1, nx=True, ex=NUDGE_FLAG_SECONDS):
            get_queue(queue).enqueue(func)
    except (RedisError, OSError, RuntimeError) as exc:
        _mark_down(app, func, exc)
        return False
    last[func] = now
    return True


def nudge_taken(func: str) -> None:
    """For the nudged job as it starts: the next nudge asks for a new job."""
    get_redis().delete(_flag_key(func))


def _flag_key(func: str) -> str:
    return f"crm:nudged:{func}"


def _waiting_job(q: Queue, job_id: str) -> Job | None:
    if not q.connection.exists(Job.key_for(job_id)):
        return None
    job = Job.fetch(job_id, connection=q.connection)
    return job if job.get_status() in ("queued", "started", "deferred", "scheduled") else None


def _name(func: Callable | str) -> str:
    return func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"


# Set in a work horse when its worker was asked to stop (SIGTERM: a deploy, Ctrl-C): a long job checks it
# between units of work, hands back what it has not started and returns, so the worker's warm shutdown is
# quick and nothing is left half done (``crm.reminders.dispatch`` does).
STOPPING = threading.Event()
