"""Background processes: the rq worker (``workers.worker``) and the scheduler (``workers.cron``)."""
