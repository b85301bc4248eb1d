"""The periodic-job process: rq's cron scheduler running the schedule in ``workers/cron.py``.

``python -m workers.scheduler`` (Procfile ``cron``) connects to ``REDIS_URL`` or the embedded server
(starting it if needed) — which plain ``rq cron workers.cron --url …`` cannot do — then hands over to
``rq.cron.CronScheduler``. With ``REDIS_URL`` set, ``rq cron workers.cron --url "$REDIS_URL"`` is the same.
"""

from __future__ import annotations

import argparse
import logging
import sys

from crm.ops.cron_lock import OnePerTickScheduler as CronScheduler  # several schedulers: each tick once
from crm.queues import safe_url, wait_for_redis
from workers.jobs import get_app

SCHEDULE = "workers.cron"
log = logging.getLogger("crm.scheduler")


def build_scheduler(schedule: str = SCHEDULE, logging_level: str = "INFO") -> CronScheduler:
    connection, url = wait_for_redis(get_app(), log)
    log.info("scheduler connected to %s, schedule: %s", safe_url(url), schedule)
    scheduler = CronScheduler(connection=connection, logging_level=logging_level)
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
    build_scheduler(args.schedule, args.logging_level).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
