"""The rq worker process: ``python -m workers.worker [QUEUE ...] [--burst]`` (Procfile ``worker``).

Connects to ``REDIS_URL`` or the embedded server (starting it if needed), listens on ``crm.queues.QUEUES``
and runs each job in a forked work horse. The SQLAlchemy engine is disposed before every fork (as CKAN
does) so parent and child never share a database connection; the child also drops the pool it inherited
without closing the parent's sockets.

Faults (issue 17):

- **Redis goes away** (for any length of time): the worker never exits because of it. A Redis error in rq's
  loop ends that ``Worker.work()`` quietly (a job that is running is waited for first: its heartbeats are
  skipped, the horse finishes the job, which needs only the database); ``run`` then waits for Redis with
  capped backoff and starts a fresh rq worker. The outage is logged once when it starts and once when
  Redis is back.
- **SIGTERM / Ctrl-C** (warm shutdown): an idle worker exits at once (rq would wait up to 60 s joining its
  pubsub thread); a busy one passes the signal on to its horse, where ``crm.queues.STOPPING`` tells long
  jobs to hand back what they have not started and return (dispatch does), then exits. A second signal is
  rq's cold shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time

from rq import Queue, Worker
from rq.exceptions import StopRequested

from crm import queues as crm_queues
from crm.queues import QUEUES, REDIS_ERRORS, Backoff, Outage, safe_url, wait_for_redis
from workers.jobs import get_app

log = logging.getLogger("crm.worker")


class AppWorker(Worker):
    """An rq ``Worker`` that keeps database connections out of ``fork()``, survives a lost Redis (leaves
    its work loop quietly so ``run`` can reconnect) and shuts down promptly."""

    outage: Outage | None = None

    def __init__(self, *args, outage: Outage | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = outage or Outage(log)
        self.redis_lost = False  # the work loop ended because Redis went away
        self.asked_to_stop = False  # SIGTERM/SIGINT received

    # ------------------------------------------------------------ Redis going away

    def _lost(self, exc: BaseException) -> None:
        self.redis_lost = True
        self.outage.lost(exc, "the worker keeps running and reconnects with backoff")

    def _leave_or_carry_on(self, exc: BaseException) -> None:
        """While a horse runs, wait for it (its job needs only the database); otherwise leave the loop."""
        self._lost(exc)
        if not self.horse_pid:
            raise StopRequested from exc

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:  # queued into a pipeline: the error, if any, comes from its execute()
            return super().heartbeat(timeout, pipeline=pipeline)
        try:
            return super().heartbeat(timeout)
        except REDIS_ERRORS as exc:
            self._leave_or_carry_on(exc)

    def maintain_heartbeats(self, job, execution):
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_ERRORS as exc:
            self._lost(exc)  # keep waiting for the horse

    def set_state(self, state, pipeline=None):
        if pipeline is not None or self.is_horse:
            return super().set_state(state, pipeline=pipeline)
        try:
            return super().set_state(state)
        except REDIS_ERRORS as exc:
            self._leave_or_carry_on(exc)

    def check_for_suspension(self, burst: bool):
        try:
            return super().check_for_suspension(burst)
        except REDIS_ERRORS as exc:
            self._leave_or_carry_on(exc)

    def run_maintenance_tasks(self):
        try:
            return super().run_maintenance_tasks()
        except REDIS_ERRORS as exc:
            self._leave_or_carry_on(exc)

    def set_shutdown_requested_date(self):
        try:
            super().set_shutdown_requested_date()
        except REDIS_ERRORS as exc:
            self._lost(exc)

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except REDIS_ERRORS as exc:
            # The job's outcome could not be written to Redis (every job is idempotent; the periodic
            # ones come again). The horse has finished; reconnect before taking the next job.
            self._lost(exc)
            raise StopRequested from exc

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread):
        if isinstance(exc, REDIS_ERRORS):
            self.outage.lost(exc, "the worker keeps running and reconnects with backoff")
            time.sleep(1.0)  # no busy loop while redis-py retries
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def teardown(self):
        try:
            super().teardown()
        except REDIS_ERRORS as exc:
            self._lost(exc)
            self.unsubscribe()

    def unsubscribe(self):
        """rq joins the pubsub thread without a timeout, and it sleeps up to 60 s in ``get_message``: stop it
        with a short timeout instead (it is a daemon thread), so an idle worker exits at once."""
        thread, self.pubsub_thread = self.pubsub_thread, None
        if thread is None:
            return
        with contextlib.suppress(REDIS_ERRORS):
            self.pubsub.unsubscribe()
        thread.stop(timeout=1.0)
        if not thread.is_alive():
            with contextlib.suppress(REDIS_ERRORS):
                self.pubsub.close()

    # ------------------------------------------------------------ shutdown

    def request_stop(self, signum, frame):
        self.asked_to_stop = True
        super().request_stop(signum, frame)

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            # The horse finishes or hands back its job (crm.queues.STOPPING), then the worker exits.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.horse_pid, signal.SIGTERM)

    def setup_work_horse_signals(self):
        """In the horse: Ctrl-C is the worker's business; SIGTERM asks the job to wrap up (not a kill)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def wrap_up(signum, frame):
            if not crm_queues.STOPPING.is_set():
                log.info("work horse: stop requested, the job hands back what it has not started")
                crm_queues.STOPPING.set()

        signal.signal(signal.SIGTERM, wrap_up)

    # ------------------------------------------------------------ fork

    def fork_work_horse(self, job, queue):
        from crm.extensions import db

        with get_app().app_context():
            db.session.remove()
            db.engine.dispose()
        return super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        from crm.extensions import db

        with get_app().app_context():
            db.engine.dispose(close=False)  # the parent's pool, if any, stays the parent's
        return super().main_work_horse(job, queue)


def build_worker(queue_names: list[str] | None = None, outage: Outage | None = None, stop=None) -> AppWorker:
    """A worker for ``queue_names`` (default: all of ``QUEUES``) on the app's Redis (waits for it)."""
    connection, url = wait_for_redis(get_app(), log, outage=outage, stop=stop)
    names = queue_names or list(QUEUES)
    log.info("worker connected to %s, queues: %s", safe_url(url), ", ".join(names))
    return AppWorker([Queue(n, connection=connection) for n in names], connection=connection, outage=outage)


def run(queue_names: list[str] | None = None, *, burst: bool = False, logging_level: str = "INFO") -> int:
    """Work until asked to stop, starting a fresh rq worker whenever Redis was lost. Returns the exit code."""
    outage = Outage(log)
    stop = threading.Event()
    backoff = Backoff()

    def on_signal(signum, frame):  # between rq workers (waiting for Redis)
        stop.set()

    while True:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            worker = build_worker(queue_names, outage, stop)
        except InterruptedError:
            return 0
        except REDIS_ERRORS as exc:  # lost again between the ping and the worker's first commands
            outage.lost(exc)
            if stop.wait(backoff.next()):
                return 0
            continue
        if stop.is_set():
            return 0
        backoff.reset()
        try:
            worker.work(burst=burst, logging_level=logging_level)
        except REDIS_ERRORS as exc:  # rq's start-up (register_birth, subscribe) outside its own loop
            worker._lost(exc)
            worker.teardown()
        if worker.asked_to_stop or stop.is_set():
            return 0
        if not worker.redis_lost:
            # The loop ended by itself: burst done, or an unexpected error rq has logged (the supervisor
            # restarts the process).
            return 0 if burst else 1
        if stop.wait(backoff.next()):
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.worker", description=__doc__.split("\n")[0])
    parser.add_argument("queues", nargs="*", help=f"queues to listen on (default: {' '.join(QUEUES)})")
    parser.add_argument("--burst", action="store_true", help="run the jobs waiting now, then exit")
    parser.add_argument("--logging-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.logging_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    unknown = [q for q in args.queues if q not in QUEUES]
    if unknown:
        parser.error(f"unknown queue(s): {', '.join(unknown)} (known: {', '.join(QUEUES)})")
    return run(args.queues, burst=args.burst, logging_level=args.logging_level)


if __name__ == "__main__":
    sys.exit(main())
