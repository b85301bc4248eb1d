"""Fault tests of reminder dispatch (issue 17), with real processes: an rq worker and the scheduler
(``tests/fault_schedule.py``: dispatch every 2 s, 1.5 s per run) on a redis-server of the test's own,
gunicorn for the web, and a local HTTP receiver counting what it got (by ``Idempotency-Key``, one per
reminder). Each test prints tries / lost / duplicated.

1. Redis stopped (``FAULT_OUTAGE_SECONDS``, default 8 s) while 2,000 reminders are being dispatched: 0 lost,
   0 duplicated, every process alive afterwards, the web answering 200 throughout.
2. Worker and work horse SIGKILLed 3 times mid-dispatch, then restarted: 0 lost, duplicates at most the
   sends in flight (``HTTP_CONCURRENCY``) per kill.
3. SIGTERM mid-dispatch: the worker hands back what it has not sent and exits; 0 duplicated, 0 lost.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm.extensions import db
from crm.models import Role
from crm.reminders import dispatch
from tests import fault_support as fs
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

N = int(os.environ.get("FAULT_REMINDERS") or 2000)
OUTAGE_SECONDS = float(os.environ.get("FAULT_OUTAGE_SECONDS") or 8)
DELAY = 0.02  # each webhook answer takes 20 ms: a dispatch of N spans several scheduled runs
FINISH_TIMEOUT = 240  # overall limit for a dispatch to complete (generous: a loaded 2-core machine)


@dataclass
class Setup:
    receiver: Receiver
    redis: fs.RedisServer
    env: dict
    logdir: Path


@pytest.fixture
def setup(app, make, tmp_path):
    rep = make.user(Role.REP, name="小王")  # default channels include the webhook
    with Receiver(delay=DELAY) as receiver:
        fs.webhook_to(receiver.url + "/hook")
        # A dead worker's claims come back after 3 s (the form allows 30 s at least).
        fs.configure_dispatch(claim_timeout_seconds=3, backoff_seconds=1)
        fs.due_reminders(rep.id, N)
        db.session.remove()
        db.engine.dispose()
        redis = fs.RedisServer(tmp_path)
        redis.start()
        try:
            yield Setup(receiver, redis, fs.process_env(app, redis.url), tmp_path)
        finally:
            redis.stop()


def _received(s: Setup) -> int:
    with s.receiver.lock:
        return len(s.receiver.keys)


def _wait_all(s: Setup, procs: list[fs.Proc]) -> None:
    def done():
        for proc in procs:
            assert proc.running(), f"{proc.name} died:\n{proc.log()[-3000:]}"
        return _received(s) >= N

    fs.wait_until(done, FINISH_TIMEOUT, f"all {N} reminders to arrive", interval=0.25)
    time.sleep(1.0)  # anything sent twice would arrive now


def _report(name: str, s: Setup, extra: str = "") -> tuple[int, int, int]:
    tries, lost, duplicated = fs.tally(s.receiver, N)
    print(f"\n[fault] {name}: reminders={N} tries={tries} lost={lost} duplicated={duplicated} {extra}")
    return tries, lost, duplicated


def test_redis_outage_mid_dispatch_loses_and_repeats_nothing_and_nothing_dies(app, setup):
    s = setup
    port = fs.free_port()
    web = fs.gunicorn(s.env, s.logdir, port)
    probe = fs.WebProbe(f"http://127.0.0.1:{port}/login")
    procs: list[fs.Proc] = [web]
    try:
        fs.wait_until(lambda: "Booting worker" in web.log(), 60, "gunicorn to start")
        fs.wait_until(lambda: probe_ok(port), 60, "the web to answer")
        probe.start()
        worker, cron = fs.worker(s.env, s.logdir), fs.scheduler(s.env, s.logdir)
        procs += [worker, cron]
        fs.wait_until(lambda: _received(s) >= N // 10, FINISH_TIMEOUT, "the dispatch to get going")
        s.redis.stop()
        at_stop = _received(s)
        time.sleep(OUTAGE_SECONDS)
        during = _received(s)
        for proc in procs:
            assert proc.running(), f"{proc.name} died during the outage:\n{proc.log()[-3000:]}"
        s.redis.start()
        _wait_all(s, procs)
        for proc in procs:
            assert proc.running(), f"{proc.name} died:\n{proc.log()[-3000:]}"
        probe.stop()
        tries, lost, duplicated = _report(
            "redis outage", s,
            f"outage={OUTAGE_SECONDS:.0f}s received_at_stop={at_stop} at_restart={during} "
            f"web_requests={len(probe.statuses)} web_not_200={len(probe.bad)}",
        )  # fmt: skip
        assert (lost, duplicated) == (0, 0)
        assert during < N, "the dispatch must still have been going when Redis came back"
        assert probe.statuses and not probe.bad, f"web answers during the outage: {probe.bad[:20]}"
        assert fs.delivery_counts() == {"sent": N}
        for proc in (worker, cron):
            log = proc.log()
            assert log.count("Redis not reachable") == 1, log[-4000:]  # logged once when it goes …
            assert log.count("Redis reachable again") == 1, log[-4000:]  # … and once when it is back
            assert "Traceback" not in log, log[-4000:]
    finally:
        probe.stop()
        for proc in procs:
            proc.stop()


def probe_ok(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_worker_and_horse_sigkilled_three_times_lose_nothing_and_repeat_only_in_flight_sends(setup):
    s = setup
    cron = fs.scheduler(s.env, s.logdir)
    worker = fs.worker(s.env, s.logdir, "dispatch")
    procs = [cron]
    kills = 0
    try:
        for kill in range(3):
            target = (kill + 1) * N // 5
            fs.wait_until(
                lambda t=target: _received(s) >= t, FINISH_TIMEOUT, f"{target} reminders before kill"
            )
            horse = fs.wait_until(lambda w=worker: fs.horse_of(w), 60, "a work horse mid-dispatch", 0.01)
            os.kill(horse, signal.SIGKILL)
            os.kill(worker.pid, signal.SIGKILL)
            kills += 1
            worker.stop()
            worker = fs.worker(s.env, s.logdir, "dispatch")  # restarted (as the supervisor would)
        procs.append(worker)
        _wait_all(s, procs)
        tries, lost, duplicated = _report(
            "SIGKILL worker+horse", s, f"kills={kills} in_flight_limit={dispatch.HTTP_CONCURRENCY}"
        )
        assert lost == 0
        assert duplicated <= kills * dispatch.HTTP_CONCURRENCY
        fs.wait_until(lambda: fs.delivery_counts() == {"sent": N}, 60, "every delivery recorded sent")
    finally:
        worker.stop()
        cron.stop()


def test_sigterm_mid_dispatch_hands_back_and_repeats_nothing(setup):
    s = setup
    cron = fs.scheduler(s.env, s.logdir)
    worker = fs.worker(s.env, s.logdir, "dispatch")
    try:
        fs.wait_until(lambda: _received(s) >= N // 4, FINISH_TIMEOUT, "the dispatch to get going")
        fs.wait_until(lambda: fs.horse_of(worker), 60, "a work horse mid-dispatch", 0.01)
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        worker.popen.wait(60)  # the job's timeout is 180 s: a clean hand-back takes a moment
        took = time.monotonic() - started
        assert worker.popen.returncode == 0, worker.log()[-3000:]
        at_exit = _received(s)
        # Nothing left claimed: what was not sent went back to the queue, untried.
        assert fs.delivery_counts().get("sending", 0) == 0
        worker = fs.worker(s.env, s.logdir, "dispatch")
        _wait_all(s, [cron, worker])
        tries, lost, duplicated = _report("SIGTERM", s, f"exit_seconds={took:.1f} received_at_exit={at_exit}")
        assert (lost, duplicated) == (0, 0)
        assert at_exit < N
        assert fs.delivery_counts() == {"sent": N}
    finally:
        worker.stop()
        cron.stop()


def test_idle_worker_and_scheduler_exit_promptly_on_sigterm(setup):
    s = setup
    worker, cron = fs.worker(s.env, s.logdir), fs.scheduler(s.env, s.logdir, "workers.cron")
    try:
        fs.wait_until(lambda: "Listening on" in worker.log(), 60, "the worker to listen")
        fs.wait_until(lambda: "CronScheduler" in cron.log() and "starting" in cron.log(), 60, "the scheduler")
        time.sleep(2)  # idle: blocked in BLPOP, pubsub thread in get_message
        for proc in (worker, cron):
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            proc.popen.wait(30)
            took = time.monotonic() - started
            print(f"\n[fault] idle {proc.name} exit on SIGTERM: {took:.1f}s")
            assert proc.popen.returncode == 0, proc.log()[-3000:]
            # The goal is 5 s (measured: 1–3 s); the limit leaves room for a loaded machine, and still fails
            # the old behaviour (an idle rq worker could wait 60 s for its pubsub thread).
            assert took < 10, f"{proc.name} took {took:.1f}s to exit"
    finally:
        worker.stop()
        cron.stop()
