"""Configuration: defaults, overridden by environment variables, overridden by ``create_app(config)``.

Environment variables (documented in README):
DATABASE_URL, REDIS_URL, SECRET_KEY, CRM_TIMEZONE, CRM_INSTANCE_PATH, CRM_TRUSTED_PROXIES, CRM_SESSION_DAYS,
SMTP_* (see settings page), CRM_OUTBOUND_ALLOW (intranet networks/hosts webhooks may reach; see
crm/netguard.py), CRM_BACKUP_DIR, CRM_BACKUP_KEEP, CRM_BACKUP_NIGHTLY, CRM_METRICS_TOKEN, CRM_METRICS_ALLOW,
LOG_FORMAT, CRM_UPLOAD_DIR.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _secret_key(instance_path: Path) -> str:
    """SECRET_KEY from the environment, else generated once into ``instance/secret_key``."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        instance_path.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once agree on one key.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return key_file.read_text().strip()


def _int_env(name: str, default: int) -> int:
    """An integer from the environment; a value that is not one keeps the default (``crm doctor`` flags it)."""
    raw = (os.environ.get(name) or "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def database_url(instance_path: Path) -> str:
    """``DATABASE_URL`` (PostgreSQL, normalised to the psycopg 3 driver) or a SQLite file in ``instance/``."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return f"sqlite:///{instance_path / 'crm.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def build_config(instance_path: Path) -> dict:
    """The default configuration for an app whose instance folder is ``instance_path``."""
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        # No pool_pre_ping: a connection is pinged only after sitting idle (extensions.install_idle_ping).
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "REDIS_URL": os.environ.get("REDIS_URL", "").strip() or None,
        "CRM_TIMEZONE": os.environ.get("CRM_TIMEZONE", "Asia/Shanghai"),
        # A phone left open all day must still be able to post.
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_SSL_STRICT": False,
        "BABEL_DEFAULT_LOCALE": "zh",
        "BABEL_DEFAULT_TIMEZONE": os.environ.get("CRM_TIMEZONE", "Asia/Shanghai"),
        "LANGUAGES": {"zh": "简体中文", "en": "English"},
        "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,
        "MAX_FORM_MEMORY_SIZE": 2 * 1024 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        # A sign-in (and its remember-me cookie) ends this many days after it began (crm.auth.sessions).
        "CRM_SESSION_DAYS": _int_env("CRM_SESSION_DAYS", 30),
        # How many reverse proxies in front of the app to trust for X-Forwarded-For/-Proto/-Host (ProxyFix).
        "CRM_TRUSTED_PROXIES": _int_env("CRM_TRUSTED_PROXIES", 0),
        "LOGIN_THROTTLE_MAX_FAILURES": 5,
        "LOGIN_THROTTLE_WINDOW_MINUTES": 15,
        # Webhooks reach public addresses only; e.g. "10.1.2.0/24,relay.corp.local" allows a local relay.
        "CRM_OUTBOUND_ALLOW": os.environ.get("CRM_OUTBOUND_ALLOW", "").strip(),
        # Extra start-up work the web process skips in tests.
        "CRM_QUEUE_ASYNC": True,
        # Operations (crm/ops): backups, metrics, logs.
        "CRM_BACKUP_DIR": os.environ.get("CRM_BACKUP_DIR", "").strip() or None,
        "CRM_BACKUP_KEEP": _int_env("CRM_BACKUP_KEEP", 14),
        "CRM_BACKUP_NIGHTLY": os.environ.get("CRM_BACKUP_NIGHTLY", "auto"),
        "CRM_METRICS_TOKEN": os.environ.get("CRM_METRICS_TOKEN", "").strip() or None,
        "CRM_METRICS_ALLOW": os.environ.get("CRM_METRICS_ALLOW", "127.0.0.1,::1"),
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        # Uploaded import files; a shared folder when several hosts serve the app (default instance/imports).
        "CRM_UPLOAD_DIR": os.environ.get("CRM_UPLOAD_DIR", "").strip() or None,
        # Background tasks (crm/tasks): work up to this many rows runs inline in the request; a running
        # task silent this long is marked failed (its worker died); an import commits this many rows at once.
        "CRM_TASK_INLINE_MAX": _int_env("CRM_TASK_INLINE_MAX", 1000),
        "CRM_TASK_STUCK_SECONDS": _int_env("CRM_TASK_STUCK_SECONDS", 60),
        "CRM_IMPORT_CHUNK_ROWS": _int_env("CRM_IMPORT_CHUNK_ROWS", 1000),
    }
