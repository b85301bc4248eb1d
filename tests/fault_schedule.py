"""The fault tests' schedule (``python -m workers.scheduler --schedule tests.fault_schedule``): dispatch
every 2 s, each run sending for at most 1.5 s, so a dispatch of thousands of reminders spans many jobs (and
so Redis outages, kills and restarts) instead of one."""

from rq import cron

from workers import jobs

cron.register(jobs.dispatch_due, queue_name="dispatch", interval=2, kwargs={"budget_seconds": 1.5})
