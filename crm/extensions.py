"""Flask extensions, created once here and bound to the app in ``create_app``."""

from __future__ import annotations

import time

from flask_babel import Babel
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData, event, exc
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()


def _configure_sqlite(dbapi_connection, connection_record) -> None:
    """WAL so readers don't block the writer; a busy timeout so concurrent writers wait, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# A pooled connection idle this long is pinged before use (see ``install_idle_ping``).
IDLE_PING_SECONDS = 10.0


def install_idle_ping(engine) -> None:
    """Ping a pooled connection on checkout only when it sat idle for ``IDLE_PING_SECONDS`` — SQLAlchemy's
    ``pool_pre_ping`` pings on every checkout, a round trip per request (a tenth of an API intake on
    PostgreSQL). A connection found dead is discarded and the pool connects afresh (``DisconnectionError``
    raised from the checkout event: SQLAlchemy retries). A connection in steady use is checked by the
    request itself: a disconnect error there invalidates the whole pool."""

    @event.listens_for(engine, "checkin")
    def _stamp(dbapi_connection, connection_record) -> None:
        connection_record.info["crm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, connection_record, connection_proxy) -> None:
        since = connection_record.info.get("crm_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(
                f"pooled connection dead after {IDLE_PING_SECONDS:.0f} s idle"
            ) from error


def install_engine_hooks() -> None:
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            _configure_sqlite(dbapi_connection, connection_record)


install_engine_hooks()
