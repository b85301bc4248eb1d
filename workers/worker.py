"""The rq worker process: ``python -m workers.worker [QUEUE ...] [--burst]`` (Procfile ``worker``).

Connects to ``REDIS_URL`` or the embedded server (starting it if needed), listens on ``crm.queues.QUEUES``
and runs each job in a forked work horse. The SQLAlchemy engine is disposed before every fork (as CKAN
does) so parent and child never share a database connection; the child also drops the pool it inherited
without closing the parent's sockets.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rq import Queue, Worker

from crm.queues import QUEUES, safe_url, wait_for_redis
from workers.jobs import get_app

log = logging.getLogger("crm.worker")


class AppWorker(Worker):
    """An rq ``Worker`` that keeps database connections out of ``fork()``."""

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


def build_worker(queue_names: list[str] | None = None) -> AppWorker:
    """A worker for ``queue_names`` (default: all of ``QUEUES``) on the app's Redis."""
    connection, url = wait_for_redis(get_app(), log)
    names = queue_names or list(QUEUES)
    log.info("worker connected to %s, queues: %s", safe_url(url), ", ".join(names))
    return AppWorker([Queue(n, connection=connection) for n in names], connection=connection)


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
    worker = build_worker(args.queues)
    worker.work(burst=args.burst, logging_level=args.logging_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
