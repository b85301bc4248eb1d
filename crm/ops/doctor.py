"""``crm doctor``: checks a production set-up and says what is wrong, one line each, in English for operators.

Problems (exit 1) make the set-up unsafe or broken; warnings are printed but do not fail. Checked: SECRET_KEY,
database, Redis, SMTP, time zone, migrations, backups, trusted proxies (``CRM_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app

from crm import clock
from crm.extensions import db

WEAK_KEYS = {
    "",
    "dev",
    "secret",
    "changeme",
    "change-me",
    "test-secret",
    "replace-with-64-random-hex-characters",
}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def check(self, name: str, problem: str | None = None, warning: str | None = None) -> None:
        # status.* reasons start with their own subject ("redis: …"); say it once.
        problem = (
            problem.split(": ", 1)[1]
            if problem and problem.lower().startswith(name.lower() + ": ")
            else problem
        )
        if problem:
            self.problems.append(f"{name}: {problem}")
        elif warning:
            self.warnings.append(f"{name}: {warning}")
        else:
            self.passed.append(name)


def _secret_key(report: Report) -> None:
    key = str(current_app.config.get("SECRET_KEY") or "")
    if not os.environ.get("SECRET_KEY"):
        report.check(
            "SECRET_KEY", "not set in the environment (a key generated into instance/ differs per host)"
        )
    elif key.lower() in WEAK_KEYS or len(key) < 32:
        report.check(
            "SECRET_KEY",
            "too short or a known example value (use: python -c 'import secrets; print(secrets.token_hex(32))')",
        )
    else:
        report.check("SECRET_KEY")


def _database(report: Report) -> None:
    from crm.ops import status

    down = status.database_ok()
    if down:
        report.check("database", down)
        return
    if db.engine.dialect.name == "sqlite":
        report.check(
            "database", warning="SQLite: fine for one host; PostgreSQL is needed for several web hosts"
        )
    else:
        report.check("database")
    behind, _heads = status.migrations_state()
    report.check("migrations", behind)


def _redis(report: Report) -> None:
    from crm.ops import status

    if not current_app.config.get("REDIS_URL"):
        report.check("Redis", "REDIS_URL is not set (the embedded development server is not for production)")
        return
    report.check("Redis", status.redis_ok())


def _smtp(report: Report) -> None:
    from crm.settings import store

    try:
        smtp = store.get(db.session, "smtp")
    except Exception as exc:  # no settings table yet: the database check says why
        db.session.rollback()
        report.check("SMTP", warning=f"settings not readable ({exc.__class__.__name__})")
        return
    if not smtp.get("enabled"):
        report.check("SMTP", warning="email reminders are off (管理 → 通知渠道)")
        return
    host, port = smtp.get("host"), int(smtp.get("port") or 25)
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        report.check("SMTP", f"cannot reach {host}:{port} ({exc})")
        return
    report.check("SMTP", None if smtp.get("from_addr") else "no sender address (from_addr)")


def _timezone(report: Report) -> None:
    name = current_app.config.get("CRM_TIMEZONE") or ""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        report.check("time zone", f"CRM_TIMEZONE={name!r} is not a time zone name (e.g. Asia/Shanghai)")
        return
    host_tz = os.environ.get("TZ")
    if host_tz and host_tz != name:
        report.check(
            "time zone", warning=f"TZ={host_tz} but CRM_TIMEZONE={name}: the nightly jobs run on TZ's clock"
        )
    elif not host_tz:
        report.check(
            "time zone",
            warning=f"TZ is not set: nightly jobs follow the host's clock; set TZ={name} for the scheduler",
        )
    else:
        report.check("time zone")


def _backups(report: Report) -> None:
    from crm.ops import backup

    folder = backup.backup_dir()
    latest = backup.latest_backup()
    if latest is None:
        report.check("backups", f"no backup in {folder} (run: flask --app app crm backup)")
    elif clock.now() - latest.taken_at > backup.STALE_AFTER:
        report.check("backups", f"the newest backup ({latest.path.name}) is older than two days")
    elif not os.access(folder, os.W_OK):
        report.check("backups", f"{folder} is not writable")
    else:
        report.check("backups")


def _trusted_proxies(report: Report) -> None:
    raw = os.environ.get("CRM_TRUSTED_PROXIES", "").strip()
    if not raw:
        report.check(
            "trusted proxies",
            warning="CRM_TRUSTED_PROXIES is not set: behind nginx, client addresses and https are not seen",
        )
    elif not raw.isdigit():
        report.check(
            "trusted proxies",
            f"CRM_TRUSTED_PROXIES={raw!r} must be the number of proxies in front (usually 1)",
        )
    else:
        report.check("trusted proxies")


CHECKS = (_secret_key, _database, _redis, _smtp, _timezone, _backups, _trusted_proxies)


def diagnose() -> Report:
    report = Report()
    for check in CHECKS:
        check(report)
    return report
