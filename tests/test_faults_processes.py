"""Fault tests of the processes around the web (issue 17), with real processes and signals:

5. gunicorn SIGKILLed (workers twice, then the master with its workers, restarted) during a burst of
   follow-up posts through the API: every follow-up that got a 2xx answer is in the database.
6. ``./dev run``-style supervision (honcho with the real Procfile): the scheduler SIGKILLed is back within
   10 s (``workers.supervise`` restarts it and says so in the log) and the web never stopped answering.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import FollowUp, Role
from tests import fault_support as fs

pytestmark = pytest.mark.slow


@pytest.fixture
def redis(tmp_path):
    server = fs.RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _post(url: str, token: str, payload: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # no answer: the worker died under the request


def test_gunicorn_sigkilled_during_a_burst_keeps_every_acknowledged_followup(app, make, redis, tmp_path):
    rep = make.user(Role.REP, name="小王")
    pool = make.pool(members=[rep])
    customers = [make.customer(pool, owner=rep).id for _ in range(20)]
    token = make.token(rep)
    db.session.remove()
    db.engine.dispose()
    env = fs.process_env(app, redis.url)
    port = fs.free_port()
    base = f"http://127.0.0.1:{port}"
    web = fs.gunicorn(env, tmp_path, port, workers=2)
    acked: list[str] = []
    tries = [0]
    lock = threading.Lock()
    halt = threading.Event()
    next_at = clock.local(clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    def burst(lane: int) -> None:
        n = 0
        while not halt.is_set():
            n += 1
            content = f"burst {lane}-{n}"
            customer = customers[(lane * 7 + n) % len(customers)]
            payload = {"channel": "phone", "content": content, "next_plan": "再联系", "next_contact_at": next_at,
                       "confirm_over_cap": True}  # fmt: skip
            status = _post(f"{base}/api/v1/customers/{customer}/followups", token, payload)
            with lock:
                tries[0] += 1
                if 200 <= status < 300:
                    acked.append(content)
            if status == 0:
                time.sleep(0.05)

    lanes = [threading.Thread(target=burst, args=(i,), daemon=True) for i in range(4)]
    kills = 0
    try:
        fs.wait_until(lambda: _answers(base), 60, "gunicorn to answer")
        for lane in lanes:
            lane.start()
        for _round in range(2):  # SIGKILL the workers (the master starts new ones)
            fs.wait_until(lambda n=len(acked) + 15: len(acked) >= n, 60, "follow-ups to be saved")
            for pid in fs.children(web.pid):
                os.kill(pid, signal.SIGKILL)
                kills += 1
        fs.wait_until(lambda n=len(acked) + 15: len(acked) >= n, 60, "follow-ups after the worker kills")
        web.kill_group()  # the master and its workers at once
        kills += 1
        web = fs.gunicorn(env, tmp_path, port, workers=2)
        fs.wait_until(lambda n=len(acked) + 15: len(acked) >= n, 90, "follow-ups after the restart")
    finally:
        halt.set()
        for lane in lanes:
            lane.join(30)
        web.stop()
    saved = set(db.session.scalars(select(FollowUp.content).where(FollowUp.content.like("burst %"))))
    lost = [c for c in acked if c not in saved]
    print(f"\n[fault] gunicorn SIGKILL: tries={tries[0]} acknowledged={len(acked)} saved={len(saved)} "
          f"lost={len(lost)} duplicated={len(acked) - len(set(acked))} kills={kills}")  # fmt: skip
    assert acked and not lost
    assert len(acked) == len(set(acked))


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/login", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_honcho_supervision_restarts_a_killed_scheduler_and_the_web_keeps_answering(app, redis, tmp_path):
    db.session.remove()
    db.engine.dispose()
    port = fs.free_port()
    env = fs.process_env(app, redis.url, HOST="127.0.0.1")
    honcho = Path(sys.executable).parent / "honcho"
    run = fs.Proc("honcho", [str(honcho), "start", "-f", "Procfile", "-p", str(port), "web", "worker", "cron"],
                  env, tmp_path)  # fmt: skip
    probe = fs.WebProbe(f"http://127.0.0.1:{port}/login")

    def scheduler_pids() -> list[int]:
        return [p for p in fs.descendants(run.pid)
                if "-m workers.scheduler" in fs.cmdline(p) and "workers.supervise" not in fs.cmdline(p)
                and fs.alive(p)]  # fmt: skip

    try:
        fs.wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), 90, "the web under honcho")
        first = fs.wait_until(scheduler_pids, 60, "the scheduler under honcho")[0]
        fs.wait_until(lambda: "scheduler connected" in run.log(), 60, "the scheduler to connect")
        probe.start()
        time.sleep(1)
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = fs.wait_until(lambda: [p for p in scheduler_pids() if p != first], 30, "a new scheduler")[0]
        back = time.monotonic() - killed_at
        fs.wait_until(lambda: run.log().count("scheduler connected") >= 2, 60, "the new scheduler to connect")
        connected = time.monotonic() - killed_at
        time.sleep(1)
        probe.stop()
        log = run.log()
        print(f"\n[fault] supervision: scheduler back after {back:.1f}s (connected after {connected:.1f}s), "
              f"web requests={len(probe.statuses)} not_200={len(probe.bad)}")  # fmt: skip
        assert back < 10
        assert "exited by itself (killed by SIGKILL); restarting" in log, log[-4000:]
        assert run.running(), log[-4000:]  # honcho did not stop everything
        assert probe.statuses and not probe.bad, probe.bad[:20]
        assert second != first
        # Ctrl-C / deploy: honcho stops everything, promptly, with nothing left behind.
        run.signal(signal.SIGTERM)
        run.popen.wait(60)
        fs.wait_until(lambda: not fs.alive(second), 30, "the scheduler to stop with honcho")
    finally:
        probe.stop()
        run.stop()


def test_supervisor_restarts_a_crashing_child_with_backoff_and_passes_sigterm_on_once(tmp_path):
    marker = tmp_path / "signals.txt"
    child = (
        "import signal, sys, time\n"
        f"log = open({str(marker)!r}, 'a')\n"
        "def bye(signum, frame):\n"
        "    log.write(f'got {signum}\\n'); log.flush(); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "log.write('start\\n'); log.flush()\n"
        "if open(log.name).read().count('start') < 3: sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fs.ROOT)}
    sup = fs.Proc("supervise", [sys.executable, "-m", "workers.supervise", "--name", "demo", "--", sys.executable,
                                "-c", child], env, tmp_path)  # fmt: skip
    try:
        fs.wait_until(lambda: marker.exists() and marker.read_text().count("start") >= 3, 30, "two restarts")
        log = sup.log()
        assert log.count("exited by itself (exit code 3); restarting in") == 2, log
        assert "restarting in 1 s" in log and "restarting in 2 s" in log  # the backoff grows
        time.sleep(0.5)
        sup.signal(signal.SIGTERM)
        assert sup.popen.wait(30) == 0
        assert marker.read_text().count("got 15") == 1  # passed on exactly once
        assert "exited (exit code 0) on request" in sup.log()
    finally:
        sup.stop()
