"""Helpers of the fault tests (tests/test_faults_*.py): real processes (rq workers, the scheduler, gunicorn,
honcho, redis-server) started on free ports with the test's database, real signals, and polling with
generous limits (the tests must pass on a loaded 2-core machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from crm import clock
from crm.extensions import db
from crm.models import Reminder, ReminderDelivery, Setting, WebhookEndpoint

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
FAULT_SCHEDULE = "tests.fault_schedule"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll until ``predicate()`` is truthy (returns it); fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(p) for p in fh.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class Proc:
    """A child process whose stderr/stdout go to a log file under the test's tmp dir."""

    def __init__(self, name: str, args: list[str], env: dict, logdir: Path, new_session: bool = True):
        self.name = name
        self.log_path = logdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._fh = open(self.log_path, "w")  # noqa: SIM115 (kept open for the child's life)
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=new_session)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._fh.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL (the whole session: work horses too) after ``timeout``."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill_group()
        self._fh.close()
        return self.popen.returncode

    def kill_group(self) -> None:
        for pid in [*descendants(self.pid), self.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def process_env(app, redis_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL=redis_url,
        CRM_INSTANCE_PATH=app.instance_path,
        SECRET_KEY="test-secret",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
        CRM_REDIS_RETRY_MAX="1",  # reconnect within a second of Redis coming back
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    env.update(extra)
    return env


def worker(env: dict, logdir: Path, *queues: str) -> Proc:
    return Proc("worker", [sys.executable, "-m", "workers.worker", *queues], env, logdir)


def scheduler(env: dict, logdir: Path, schedule: str = FAULT_SCHEDULE) -> Proc:
    return Proc("scheduler", [sys.executable, "-m", "workers.scheduler", "--schedule", schedule], env, logdir)


def gunicorn(env: dict, logdir: Path, port: int, workers: int = 2) -> Proc:
    return Proc("gunicorn", [sys.executable, "-m", "gunicorn", "app:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--error-logfile", "-"], env, logdir)  # fmt: skip


def horse_of(worker_proc: Proc) -> int | None:
    """The work horse (rq forks one per job) of a worker process, if one is running."""
    kids = [p for p in children(worker_proc.pid) if alive(p)]
    return kids[0] if kids else None


class RedisServer:
    """A redis-server of our own on a free port (no persistence), to stop and start again."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, 20, "redis-server to answer")

    def _answers(self) -> bool:
        from redis import Redis
        from redis.exceptions import RedisError

        try:
            return bool(Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # abrupt, like a crash or OOM kill
            self.proc.wait(10)
        self.proc = None


class WebProbe(threading.Thread):
    """Asks a page every ``interval`` s in the background; keeps every answer's status (0: no answer)."""

    def __init__(self, url: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.statuses: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    self.statuses.append(resp.status)
            except urllib.error.HTTPError as exc:
                self.statuses.append(exc.code)
            except OSError:
                self.statuses.append(0)
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(15)

    @property
    def bad(self) -> list[int]:
        return [s for s in self.statuses if s != 200]


# ---------------------------------------------------------------- data


def configure_dispatch(**values) -> None:
    """Dispatch settings written directly (tests shorten the claim timeout below what the form allows)."""
    from crm.reminders.settings import DISPATCH_DEFAULTS

    row = db.session.get(Setting, "dispatch")
    data = {**DISPATCH_DEFAULTS, **(row.data if row is not None else {}), **values}
    if row is None:
        db.session.add(Setting(section="dispatch", data=data, updated_at=clock.now()))
    else:
        row.data = data
    db.session.commit()


def webhook_to(url: str) -> WebhookEndpoint:
    ep = WebhookEndpoint(kind="webhook", name="webhook", url=url, secret=None, team_id=None, enabled=True,
                         extra={}, created_at=clock.now())  # fmt: skip
    db.session.add(ep)
    db.session.commit()
    return ep


def due_reminders(user_id: int, n: int, now: datetime | None = None) -> None:
    """``n`` open reminders of the user, all due a minute ago (one bulk insert)."""
    now = now or clock.now()
    rows = [
        {"user_id": user_id, "kind": "custom", "title": f"提醒 {i}", "due_at": now - timedelta(minutes=1),
         "status": "open", "unique_key": f"fault:{uuid.uuid4().hex}", "created_at": now - timedelta(minutes=5),
         "round": 0}
        for i in range(n)
    ]  # fmt: skip
    db.session.execute(insert(Reminder), rows)
    db.session.commit()


def delivery_counts() -> dict[str, int]:
    db.session.expire_all()
    D = ReminderDelivery
    rows = db.session.execute(
        select(D.status, func.count()).where(D.channel == "webhook").group_by(D.status)
    ).all()
    db.session.commit()
    return dict(rows)


def tally(receiver, expected: int) -> tuple[int, int, int]:
    """(tries, lost, duplicated) as the receiver saw them: requests, reminders never received, extra copies."""
    with receiver.lock:
        counts = list(receiver.keys.values())
        tries = receiver.requests
    lost = expected - len(counts)
    duplicated = sum(c - 1 for c in counts if c > 1)
    return tries, lost, duplicated
