"""The connection pool: a pooled connection is pinged only after sitting idle, and one found dead is
replaced before the request uses it."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from crm import extensions
from crm.extensions import db
from tests.conftest import IS_PG, PG_URL


def _pings(engine, monkeypatch) -> list[object]:
    seen: list[object] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection):
        seen.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def test_a_connection_in_steady_use_is_not_pinged_and_an_idle_one_is(app, monkeypatch):
    with app.app_context():
        engine = db.engine
        pings = _pings(engine, monkeypatch)
        for _ in range(3):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert pings == []
        monkeypatch.setattr(extensions, "IDLE_PING_SECONDS", 0.0)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert len(pings) == 1


def test_a_connection_that_died_while_idle_is_replaced_before_use(app, monkeypatch):
    with app.app_context():
        engine = db.engine
        with engine.connect() as conn:
            if IS_PG:
                before = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            raw = conn.connection.dbapi_connection
        # The server ends the pooled connection (a restart, an idle timeout) while it sits in the pool.
        if IS_PG:
            admin = create_engine(PG_URL)
            with admin.connect() as other:
                assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before}).scalar()
            admin.dispose()
        else:
            raw.close()
        monkeypatch.setattr(extensions, "IDLE_PING_SECONDS", 0.0)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            assert conn.connection.dbapi_connection is not raw
            if IS_PG:
                assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != before
