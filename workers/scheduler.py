"""The periodic-job process: rq's cron scheduler running the schedule in ``workers/cron.py``.

``python -m workers.scheduler`` (Procfile ``cron``) connects to ``REDIS_URL`` or the embedded server
(starting it if needed) — which plain ``rq cron workers.cron --url …`` cannot do — then runs
``AppCronScheduler``: rq's ``CronScheduler`` with a loop that survives Redis going away (rq's own ``start``
exits on the first ConnectionError, in ``enqueue_jobs`` and again in ``register_death``). While Redis is
away the scheduler retries with capped backoff, logging once when it goes and once when it is back; a job
that could not be enqueued stays due and is enqueued on the first try that works. SIGTERM/SIGINT end it
within a second.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from crm.ops.cron_lock import OnePerTickScheduler as CronScheduler  # several schedulers: each tick once
from crm.queues import REDIS_ERRORS, Backoff, Outage, safe_url, wait_for_redis
from workers.jobs import get_app

SCHEDULE = "workers.cron"
log = logging.getLogger("crm.scheduler")


class AppCronScheduler(CronScheduler):
    """``CronScheduler`` whose loop keeps running through Redis outages and stops promptly on a signal."""

    def __init__(self, *args, outage: Outage | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = outage or Outage(log)
        self.stop = threading.Event()
        self.backoff = Backoff()
        self._born = False

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self.log.info("CronScheduler %s: received shutdown signal %s", self.name, signum)
            self.stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def tick(self) -> float:
        """Enqueue what is due and send the heartbeat; returns how long to sleep. Raises Redis errors."""
        if not self._born:
            self.register_birth()
            self._born = True
        if self.enqueue_jobs():
            self.save()  # persist the jobs' timing for monitoring
        self.heartbeat()
        return self.calculate_sleep_interval()

    def start(self):
        self.log.info("CronScheduler %s: starting...", self.name)
        self._install_signal_handlers()
        try:
            while not self.stop.is_set():
                try:
                    wait = self.tick()
                    self.outage.back()
                    self.backoff.reset()
                except REDIS_ERRORS as exc:
                    self.outage.lost(exc, "the scheduler keeps running and retries with backoff")
                    wait = self.backoff.next()
                if wait > 0:
                    self.stop.wait(wait)
            self.log.info("CronScheduler %s: stop requested", self.name)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):  # its key expires by itself
                self.register_death()
            self.log.info("CronScheduler %s: shutdown complete", self.name)


def build_scheduler(schedule: str = SCHEDULE, logging_level: str = "INFO", stop=None) -> AppCronScheduler:
    outage = Outage(log)
    connection, url = wait_for_redis(get_app(), log, outage=outage, stop=stop)
    log.info("scheduler connected to %s, schedule: %s", safe_url(url), schedule)
    scheduler = AppCronScheduler(connection=connection, logging_level=logging_level, outage=outage)
    scheduler.load_config_from_file(schedule)
    return scheduler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--schedule", default=SCHEDULE, help="module or file with rq.cron.register lines")
    parser.add_argument("--logging-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.logging_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        scheduler = build_scheduler(args.schedule, args.logging_level, stop=stop)
    except InterruptedError:
        return 0
    if not stop.is_set():
        scheduler.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
