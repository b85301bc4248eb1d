"""gunicorn settings for one cheap host (2 vCPU, 2–4 GB RAM): ``gunicorn -c gunicorn.conf.py app:app``.

Why these:
- ``gthread``, 2 processes × 4 threads: the app's requests mostly wait on the database, so threads let
  one slow request (a big report, a rep on a bad connection uploading a file) share its process instead of
  holding it — 8 requests in flight on a 2-CPU box, and one stuck request no longer blocks the site, as a
  sync worker does. Two processes, not one, so a crash or a memory spike takes half the capacity, not all;
  not more, because each process holds its own app, SQLAlchemy pool and caches (~100 MB). Long work
  (imports, exports, bulk moves, recomputes) never runs in a request: it is an rq job (``crm/tasks``).
- ``timeout 30``: no request is meant to take more than ~2 s, so a worker silent for 30 s is stuck and is
  replaced; ``graceful_timeout 30`` lets in-flight requests finish on a restart or deploy.
- ``keepalive 5``: phones reuse their connection across htmx polls (a task's progress every second).
- ``max_requests`` with jitter recycles a process now and then, bounding slow memory growth.
- Uploads: a 20 MB file (``MAX_CONTENT_LENGTH``) is read by the thread serving it; put a buffering proxy
  (nginx) in front on a public host so slow clients do not hold threads.

Every value can be overridden from the environment: ``WEB_CONCURRENCY`` (processes), ``WEB_THREADS``,
``WEB_TIMEOUT``, ``HOST``/``PORT``.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
