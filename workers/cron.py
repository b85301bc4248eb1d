"""The schedule: periodic jobs enqueued by rq's cron scheduler (``python -m workers.scheduler``, the
Procfile's ``cron``; or ``rq cron workers.cron --url "$REDIS_URL"``). One ``cron.register`` line per job
(``interval=`` seconds or ``cron="*/5 * * * *"``); append yours.

Periodic jobs work from "now" (not "since the last run"), so after a restart they simply catch up.
"""

from rq import cron

from workers import jobs

cron.register(jobs.heartbeat, queue_name="default", interval=60)
# Recycle sweep + warning pass (issue 5), every 3 minutes: recycling is due-to-the-minute within a few
# minutes, and the sweep is idempotent and serialised, so overlapping runs are harmless.
cron.register(jobs.recycle_sweep, queue_name="default", interval=180)
cron.register(jobs.abandon_stale_sweeps, queue_name="default", interval=600)
# Reminders (crm/reminders): dispatch every minute, generation every 10 minutes, spot-check samples hourly
# (the job samples "yesterday" once per day, so hourly runs just catch up after downtime).
cron.register(jobs.dispatch_due, queue_name="dispatch", interval=60)
cron.register(jobs.generate_reminders, queue_name="default", interval=600)
# The API's pending duplicate checks (in the database) are drained by a job the requests nudge; every
# 5 minutes as well, so checks left by a failed drain, or by a job that was lost, are not stranded.
cron.register(jobs.check_possible_duplicates, queue_name="default", interval=300)
cron.register(jobs.sample_spot_checks, queue_name="default", interval=3600)
# Nightly score recompute (decay), gram statistics and form-hit cleanup; cron times are the host's local
# time (run the scheduler with TZ=Asia/Shanghai for 02:30 China time).
cron.register(jobs.recompute_scores, queue_name="default", cron="30 2 * * *", job_timeout=1800)
# Dashboards (crm/reports): the daily pool rollup at 01:10 (and hourly catch-up is harmless: idempotent);
# the weekly pool review digest on Monday mornings, hourly 08:00–11:00 so a late scheduler still sends it
# (one reminder per manager and week).
cron.register(jobs.rollup_reports, queue_name="default", cron="10 1 * * *", job_timeout=1800)
cron.register(jobs.weekly_digest, queue_name="default", cron="0 8-11 * * 1")
# Nightly backup at 03:15 (crm/ops/backup.py; SQLite by default, see CRM_BACKUP_NIGHTLY).
cron.register(jobs.nightly_backup, queue_name="default", cron="15 3 * * *", job_timeout=3600)
# Background tasks (crm/tasks): stuck ones marked failed, ones queued while Redis was down submitted.
cron.register(jobs.watch_tasks, queue_name="default", interval=60)
