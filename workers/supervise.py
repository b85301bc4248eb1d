"""Keep a background process running: ``python -m workers.supervise -- python -m workers.worker``.

honcho (``./dev run``) stops every process as soon as one exits, so a crashed worker or scheduler would
take the web down with it. The Procfile runs them under this small supervisor instead: it restarts the
child whenever it exits by itself (a crash, a kill, an OOM), after a backoff that grows on quick repeated
failures (1 s doubling to ``--max-delay``; back to 1 s once the child has run for a minute), and logs each
restart. SIGTERM / SIGINT / SIGHUP are passed to the child once, and the supervisor exits when it has (with
its code); the child runs in its own process group so a Ctrl-C in the terminal reaches it only through
the supervisor, exactly once (a second signal would be rq's cold shutdown). On Linux the child is also
killed if the supervisor itself is SIGKILLed (no orphan keeps running).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("crm.supervise")
STABLE_SECONDS = 60.0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when my parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _preexec() -> None:
    os.setpgrp()
    _die_with_parent()


class Supervisor:
    def __init__(self, command: list[str], name: str, first_delay: float = 1.0, max_delay: float = 30.0):
        self.command, self.name = command, name
        self.first_delay, self.max_delay = first_delay, max_delay
        self.stop = threading.Event()
        self.child: subprocess.Popen | None = None
        self.forwarded = False

    def on_signal(self, signum, frame) -> None:
        self.stop.set()
        child = self.child
        if child is not None and child.poll() is None and not self.forwarded:
            self.forwarded = True
            log.info("%s: passing %s on to pid %s", self.name, signal.Signals(signum).name, child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        delay = self.first_delay
        while True:
            started = time.monotonic()
            self.forwarded = False
            self.child = subprocess.Popen(self.command, preexec_fn=_preexec)  # noqa: PLW1509 (setpgrp+prctl)
            log.info("%s: started pid %s: %s", self.name, self.child.pid, " ".join(self.command))
            code = self._wait()
            if self.stop.is_set():
                log.info("%s: pid %s exited (%s) on request", self.name, self.child.pid, _describe(code))
                return code if code >= 0 else 0
            if time.monotonic() - started >= STABLE_SECONDS:
                delay = self.first_delay
            log.warning(
                "%s: pid %s exited by itself (%s); restarting in %.0f s",
                self.name, self.child.pid, _describe(code), delay,
            )  # fmt: skip
            if self.stop.wait(delay):
                return 0
            delay = min(delay * 2, self.max_delay)

    def _wait(self) -> int:
        """Wait for the child; signals arriving meanwhile are forwarded by ``on_signal``."""
        while True:
            try:
                return self.child.wait()
            except InterruptedError:  # pragma: no cover (PEP 475 retries for us)
                continue


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.supervise", description="Restart a background process whenever it exits."
    )
    parser.add_argument("--name", help="name in the log (default: the command's last word)")
    parser.add_argument("--max-delay", type=float, default=30.0, help="longest wait before a restart (s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (python -m workers.supervise -- python -m workers.worker)")
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    supervisor = Supervisor(command, args.name or command[-1], max_delay=args.max_delay)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
