"""Configuration: defaults, overridden by environment variables, overridden by ``create_app(config)``.

Environment variables (documented in README):
DATABASE_URL, REDIS_URL, SECRET_KEY, CRM_TIMEZONE, CRM_INSTANCE_PATH, SMTP_* (see settings page).
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
        "LOGIN_THROTTLE_MAX_FAILURES": 5,
        "LOGIN_THROTTLE_WINDOW_MINUTES": 15,
        # Extra start-up work the web process skips in tests.
        "CRM_QUEUE_ASYNC": True,
        # Background tasks (crm/tasks): work up to this many rows runs inline in the request; a running
        # task silent this long is marked failed (its worker died); an import commits this many rows at once.
        "CRM_TASK_INLINE_MAX": int(os.environ.get("CRM_TASK_INLINE_MAX", "1000")),
        "CRM_TASK_STUCK_SECONDS": int(os.environ.get("CRM_TASK_STUCK_SECONDS", "60")),
        "CRM_IMPORT_CHUNK_ROWS": int(os.environ.get("CRM_IMPORT_CHUNK_ROWS", "1000")),
    }
