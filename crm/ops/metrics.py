"""Prometheus metrics (``GET /metrics``), with prometheus_client.

Two kinds:
- counted in the web processes: request latency by route, claims and refusals by reason. Under gunicorn's
  several workers set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, wiped before each start: the
  systemd unit does it) and every worker's numbers are summed at scrape time (prometheus_client's
  multiprocess mode). No live gauges are kept per process, so no ``child_exit`` hook is needed.
- read at scrape time from the shared state, so every host reports the same and nothing is lost when a
  process restarts: queue depths (Redis), jobs by outcome (``ops_jobs``), deliveries by channel and outcome
  (``reminder_deliveries``), sweep runs, durations and counts (``sweep_runs``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REQUEST_SECONDS = Histogram(
    "crm_http_request_duration_seconds",
    "Time to answer a request, by route (the URL rule, not the URL), method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLAIMS = Counter(
    "crm_claims_total", "Claims (领取) by outcome: ok, or the refusal's reason code.", ["outcome"]
)


def claim_outcome(outcome: str) -> None:
    """Hook for ``pool.services.claim``: one claim, taken (``ok``) or refused (the refusal's code)."""
    CLAIMS.labels(outcome=outcome).inc()


class SharedStateCollector(Collector):
    """Numbers read from Redis and the database at scrape time (inside the app context of the scrape)."""

    def collect(self):
        from sqlalchemy import func, select

        from crm.extensions import db
        from crm.models import ReminderDelivery, SweepRun
        from crm.ops import status
        from crm.ops.runs import job_status

        depth = GaugeMetricFamily("crm_queue_depth", "Jobs waiting in each rq queue.", labels=["queue"])
        for name, count in (status.queue_depths() or {}).items():
            depth.add_metric([name], count)
        yield depth

        jobs = CounterMetricFamily(
            "crm_jobs", "Background job runs by job and outcome.", labels=["job", "outcome"]
        )
        for name, row in job_status().items():
            jobs.add_metric([name, "ok"], row.runs - row.failures)
            jobs.add_metric([name, "failed"], row.failures)
        yield jobs

        deliveries = GaugeMetricFamily(
            "crm_reminder_deliveries",
            "Reminder deliveries by channel and state.",
            labels=["channel", "status"],
        )
        rows = db.session.execute(
            select(ReminderDelivery.channel, ReminderDelivery.status, func.count()).group_by(
                ReminderDelivery.channel, ReminderDelivery.status
            )
        )
        for channel, state, count in rows:
            deliveries.add_metric([channel, state], count)
        yield deliveries

        runs = db.session.execute(
            select(
                SweepRun.status,
                func.count(),
                func.coalesce(func.sum(SweepRun.duration_ms), 0),
                func.coalesce(func.sum(SweepRun.recycled), 0),
                func.coalesce(func.sum(SweepRun.warned), 0),
                func.coalesce(func.sum(SweepRun.escalated), 0),
            )
            .where(SweepRun.dry_run.is_(False))
            .group_by(SweepRun.status)
        ).all()
        sweeps = CounterMetricFamily("crm_sweeps", "Recycle sweep runs by status.", labels=["status"])
        seconds = CounterMetricFamily("crm_sweep_duration_seconds", "Time spent in recycle sweeps.")
        acted = CounterMetricFamily(
            "crm_sweep_customers", "Customers the sweeps acted on.", labels=["action"]
        )
        totals = [0, 0, 0, 0]
        for state, count, ms, recycled, warned, escalated in runs:
            sweeps.add_metric([state], count)
            totals = [totals[0] + ms, totals[1] + recycled, totals[2] + warned, totals[3] + escalated]
        seconds.add_metric([], totals[0] / 1000)
        for action, value in zip(("recycled", "warned", "escalated"), totals[1:], strict=True):
            acted.add_metric([action], value)
        yield from (sweeps, seconds, acted)
        last = status.last_sweep()
        if last is not None and last.duration_ms is not None:
            yield GaugeMetricFamily(
                "crm_sweep_last_duration_seconds",
                "Duration of the last recycle sweep.",
                value=last.duration_ms / 1000,
            )
        db.session.rollback()


def registry() -> CollectorRegistry:
    """This process's metrics, or every process's when ``PROMETHEUS_MULTIPROC_DIR`` is set; plus the shared state."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        reg.register(SharedStateCollector())
        return reg
    reg = CollectorRegistry()
    reg.register(_Process())
    reg.register(SharedStateCollector())
    return reg


class _Process(Collector):
    """The default registry (this process's counters and histograms), re-exported."""

    def collect(self):
        yield from REGISTRY.collect()


def allowed() -> bool:
    """A bearer token equal to ``CRM_METRICS_TOKEN`` when one is configured; else a client address within
    ``CRM_METRICS_ALLOW`` (comma-separated addresses or networks; default loopback only)."""
    token = current_app.config.get("CRM_METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode())
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    for entry in str(current_app.config.get("CRM_METRICS_ALLOW") or "").split(","):
        entry = entry.strip()
        if entry:
            try:
                if client in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def exposition() -> Response:
    if not allowed():
        abort(404)  # a scraper that is not let in learns nothing, not even that the endpoint exists
    return Response(generate_latest(registry()), mimetype=CONTENT_TYPE_LATEST)


def install_request_metrics(app: Flask) -> None:
    def _start_timer():
        g.crm_started = time.perf_counter()

    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)  # before any hook that may answer

    @app.after_request
    def _observe(response):
        started = g.pop("crm_started", None)
        if started is not None and request.endpoint != "ops.metrics":
            route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
            REQUEST_SECONDS.labels(
                route=route, method=request.method, status=str(response.status_code)
            ).observe(time.perf_counter() - started)
        return response
