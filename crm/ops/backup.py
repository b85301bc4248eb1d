"""Backups and restore (备份与恢复).

SQLite: a consistent copy of the live file through SQLite's online backup API (``sqlite3.Connection.backup``),
so the app keeps running while it is made. PostgreSQL: ``pg_dump --format=custom`` (restored with
``pg_restore --clean``). Files are named ``crm-YYYYmmdd-HHMMSS.sqlite3`` / ``.pgdump`` in UTC and only the
newest ``CRM_BACKUP_KEEP`` are kept in ``CRM_BACKUP_DIR`` (default ``instance/backups``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy.engine import URL, make_url

from crm import clock

PREFIX = "crm-"
SUFFIXES = {"sqlite": ".sqlite3", "postgresql": ".pgdump"}
STAMP = "%Y%m%d-%H%M%S"
# A backup older than this is shown as a warning on the status page and by ``crm doctor``.
STALE_AFTER = timedelta(days=2)


class BackupError(Exception):
    """A backup or restore that cannot be done, with a message for the operator."""


@dataclass
class BackupFile:
    path: Path
    taken_at: datetime
    size: int


def backup_dir(directory: str | os.PathLike | None = None) -> Path:
    configured = directory or current_app.config.get("CRM_BACKUP_DIR")
    return Path(configured) if configured else Path(current_app.instance_path) / "backups"


def database_url() -> URL:
    return make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])


def _kind(url: URL) -> str:
    name = url.get_backend_name()
    if name not in SUFFIXES:
        raise BackupError(f"backups support SQLite and PostgreSQL, not {name}")
    return name


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(url.database)


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password (which goes in PGPASSWORD, not on a command line)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client tools "
            f"(Debian/Ubuntu: sudo apt-get install postgresql-client) to back up or restore PostgreSQL"
        )
    return path


def list_backups(directory: str | os.PathLike | None = None) -> list[BackupFile]:
    """The backups in ``directory``, newest first."""
    folder = backup_dir(directory)
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            if not path.name.startswith(PREFIX) or path.suffix not in SUFFIXES.values():
                continue
            try:
                taken = datetime.strptime(path.stem[len(PREFIX) :], STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue
            found.append(BackupFile(path, taken, path.stat().st_size))
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def latest_backup(directory: str | os.PathLike | None = None) -> BackupFile | None:
    backups = list_backups(directory)
    return backups[0] if backups else None


def backup(
    directory: str | os.PathLike | None = None, keep: int | None = None, now: datetime | None = None
) -> BackupFile:
    """Write a consistent copy of the database now, then delete all but the newest ``keep`` backups."""
    url = database_url()
    kind = _kind(url)
    folder = backup_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    now = now or clock.now()
    target = folder / f"{PREFIX}{now.astimezone(UTC).strftime(STAMP)}{SUFFIXES[kind]}"
    if target.exists():
        raise BackupError(f"{target} already exists (one backup per second)")
    partial = target.with_name("." + target.name + ".partial")  # never listed, never pruned as a backup
    try:
        if kind == "sqlite":
            source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True)
            dest = sqlite3.connect(partial)
            try:
                with dest:
                    source.backup(dest)
            finally:
                dest.close()
                source.close()
        else:
            conninfo, env = _libpq(url)
            done = subprocess.run(
                [_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(partial), "--dbname", conninfo],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
        partial.replace(target)
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    prune(folder, keep if keep is not None else int(current_app.config.get("CRM_BACKUP_KEEP", 14)))
    return BackupFile(target, now.astimezone(UTC).replace(microsecond=0), target.stat().st_size)


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` (at least one) backups; returns what was deleted."""
    old = [b.path for b in list_backups(directory)[max(keep, 1) :]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def restore(path: str | os.PathLike) -> None:
    """Replace the database's contents with the backup at ``path`` (the caller checked nothing runs)."""
    source = Path(path)
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    url = database_url()
    kind = _kind(url)
    if source.suffix != SUFFIXES[kind]:
        raise BackupError(f"{source.name} is not a {kind} backup (expected a {SUFFIXES[kind]} file)")
    from crm.extensions import db

    db.session.remove()
    db.engine.dispose()
    if kind == "sqlite":
        try:
            backup_db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            if backup_db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{source.name} is damaged (integrity check failed)")
            live = sqlite3.connect(_sqlite_path(url))
            try:
                with live:
                    backup_db.backup(live)
            finally:
                live.close()
                backup_db.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{source.name} is not a usable SQLite backup: {exc}") from exc
        return
    conninfo, env = _libpq(url)
    done = subprocess.run(
        [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
         "--exit-on-error", "--dbname", conninfo, str(source)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")
