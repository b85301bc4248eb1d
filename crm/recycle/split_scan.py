"""Read-only statements run at once, one per core: a large scan split into id ranges.

PostgreSQL does the work in its server processes, so a thread per statement, each on a connection of its
own, is enough. SQLite runs inside this process, and its connections in threads of one process contend on
the library's global mutexes (measured: two threads scanning halves take as long as one thread scanning
all), so there each statement runs in a child process: a bare interpreter with only ``sqlite3`` (no app
import, ~20 ms to start) that reads the same database file and prints the rows as JSON. The statement goes
to it rendered with its values (they are numbers and timestamps the caller computed, never user text).

Each part sees the data committed when it starts, not the caller's open transaction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.engine import Engine

CHILD = Path(__file__).with_name("split_scan_child.py")


def run_all(bind: Engine, statements: list) -> list[tuple]:
    """The rows of every statement in ``statements`` (in order), run at once."""
    if bind.dialect.name == "sqlite":
        database = bind.url.database
        children = [_start_child(database, _rendered(bind, s)) for s in statements]
        return [tuple(row) for child in children for row in _rows_of(child)]

    def rows(statement) -> list[tuple]:
        with bind.connect() as conn:
            return [tuple(row) for row in conn.execute(statement)]

    with ThreadPoolExecutor(len(statements), thread_name_prefix="crm-scan") as pool:
        return [row for part in pool.map(rows, statements) for row in part]


def _rendered(bind: Engine, statement) -> str:
    """JSON of the SQL with its values in the text, plus the few the dialect still binds (SQLite's
    ``LIMIT -1`` of a bare OFFSET)."""
    compiled = statement.compile(dialect=bind.dialect, compile_kwargs={"literal_binds": True})
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    return json.dumps({"sql": str(compiled), "params": params})


def _start_child(database: str, job: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", str(CHILD), database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child.stdin.write(job)  # a few KB: fits the pipe, so every child starts before any is read
    child.stdin.close()
    return child


def _rows_of(child: subprocess.Popen) -> list:
    out = child.stdout.read()  # a few grouped rows, and at most a short traceback on stderr
    err = child.stderr.read()
    if child.wait() != 0:
        raise RuntimeError(f"split scan failed: {err.strip()[-500:]}")
    return json.loads(out)
