"""Test fixtures: an app on a fresh database per test (SQLite file, or PostgreSQL from DATABASE_URL),
clients signed in per role, and the ``make`` factory.

Redis: ``TEST_REDIS_URL`` when set (each engineer has a db number), else an embedded server started for
the session under a temp dir and stopped at the end, so the suite needs no Redis installed.

SQLite: the schema is built once into a template file and copied per test (fast, and the ledger's
append-only triggers stay on). PostgreSQL: the schema is built once; each test starts from TRUNCATE.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from crm import clock, create_app, embedded_redis
from crm.bootstrap import ensure_defaults
from crm.config import database_url
from crm.extensions import db
from crm.models import Role
from tests.factories import Factory

# The suite's webhook receivers and SMTP sinks listen on loopback, and outbound requests are refused to
# non-public addresses by default (crm/netguard.py): the tests allow loopback explicitly, in the app config
# (``_base_config``) and in the environment, so workers started as subprocesses (rq, gunicorn) inherit it.
# tests/test_security_input.py proves the default (no allow-list) refuses.
TEST_OUTBOUND_ALLOW = "127.0.0.0/8,::1"
os.environ["CRM_OUTBOUND_ALLOW"] = TEST_OUTBOUND_ALLOW

PG_URL = database_url(Path("/nonexistent")) if os.environ.get("DATABASE_URL") else None
IS_PG = bool(PG_URL and PG_URL.startswith("postgresql"))


def pytest_sessionstart(session):
    """The suite drops and recreates the schema: never on a database that might hold real data."""
    if IS_PG:
        from sqlalchemy.engine import make_url

        name = make_url(PG_URL).database or ""
        if not any(word in name for word in ("test", "ci")):
            pytest.exit(
                f"refusing to run on DATABASE_URL database {name!r}: its name must contain 'test' or 'ci'", 2
            )


_test_redis: dict[str, object] = {}


def redis_url_for_tests() -> str:
    """The Redis the tests use: ``TEST_REDIS_URL``, else an embedded server for this test session."""
    if os.environ.get("TEST_REDIS_URL"):
        return os.environ["TEST_REDIS_URL"]
    if "url" not in _test_redis:
        instance = Path(tempfile.mkdtemp(prefix="crm-test-redis-"))
        _test_redis["instance"] = instance
        _test_redis["url"] = embedded_redis.ensure_running(instance)
    return str(_test_redis["url"])


@pytest.fixture(scope="session", autouse=True)
def _stop_test_redis():
    yield
    instance = _test_redis.pop("instance", None)
    if instance is not None:
        embedded_redis.stop(instance)
        shutil.rmtree(instance, ignore_errors=True)
        _test_redis.clear()


def _base_config(tmp_path: Path, db_uri: str) -> dict:
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": db_uri,
        "WTF_CSRF_ENABLED": False,
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "REDIS_URL": redis_url_for_tests(),
        "SERVER_NAME": None,
        "CRM_OUTBOUND_ALLOW": TEST_OUTBOUND_ALLOW,  # loopback receivers (see TEST_OUTBOUND_ALLOW)
    }


@pytest.fixture(scope="session")
def schema_template(tmp_path_factory) -> str:
    """Build the schema once: a template SQLite file, or the PostgreSQL test database."""
    base = tmp_path_factory.mktemp("schema")
    if IS_PG:
        from sqlalchemy.engine import make_url

        name = make_url(PG_URL).database or ""
        if not any(word in name for word in ("test", "ci")):
            # The suite drops and recreates the schema: never on a database that might hold real data.
            pytest.exit(
                f"refusing to run on DATABASE_URL database {name!r}: its name must contain 'test' or 'ci'", 2
            )
        app = create_app(_base_config(base, PG_URL))
        with app.app_context():
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            db.create_all()
            db.engine.dispose()
        return PG_URL
    template = base / "template.sqlite3"
    app = create_app(_base_config(base, f"sqlite:///{template}"))
    with app.app_context():
        db.create_all()
        db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.engine.dispose()
    return str(template)


_truncate_engine: dict[str, object] = {}


def _truncate_all(url: str) -> None:
    """Empty the tables the last test wrote to and restart their ids.

    Not TRUNCATE: it costs 0.3–1.5 s per test on PostgreSQL (a lock and a file swap per table, and CASCADE
    from the always-filled levels/stages reaches every table). Deleting the rows of the non-empty tables
    with triggers off (``session_replication_role = replica``: FK checks and the ledger's append-only
    guard) takes ~20 ms.
    """
    engine = _truncate_engine.get(url)
    if engine is None:
        engine = _truncate_engine[url] = create_engine(url)
    tables = {t.name: t for t in db.metadata.sorted_tables}
    probe = " UNION ALL ".join(f"SELECT '{n}' WHERE EXISTS (SELECT 1 FROM \"{n}\")" for n in tables)
    from sqlalchemy.exc import ProgrammingError

    with engine.connect() as conn:
        dirty = [row[0] for row in conn.execute(text(probe))]
        conn.rollback()
    if not dirty:
        return
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for name in dirty:
                conn.execute(text(f'DELETE FROM "{name}"'))
                column = tables[name].autoincrement_column
                if column is not None:
                    conn.execute(
                        text("SELECT setval(pg_get_serial_sequence(:t, :c), 1, false)"),
                        {"t": name, "c": column.name},
                    )
    except ProgrammingError:  # not a superuser: the slow, always-allowed way
        everything = ", ".join(f'"{n}"' for n in tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {everything} RESTART IDENTITY CASCADE"))


@pytest.fixture
def db_uri(schema_template, tmp_path) -> str:
    if IS_PG:
        _truncate_all(schema_template)
        return schema_template
    target = tmp_path / "test.sqlite3"
    shutil.copyfile(schema_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def app_config(tmp_path, db_uri) -> dict:
    """Override in a test module to change configuration (e.g. enable CSRF)."""
    return _base_config(tmp_path, db_uri)


class IsolatedClient(FlaskClient):
    """Each request runs in its own app context (own ``g`` and database session), like a real server;
    afterwards the test's session is expired so it sees what the request committed."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            response = super().open(*args, **kwargs)
        db.session.expire_all()
        return response


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    app.test_client_class = IsolatedClient
    with app.app_context():
        ensure_defaults(db.session, clock.now())
        db.session.commit()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def session(app):
    return db.session


@pytest.fixture
def make(app) -> Factory:
    return Factory(db.session)


@pytest.fixture
def client(app):
    return app.test_client()


def login(client, user) -> None:
    """Sign a test client in as ``user`` without going through the form (a real sign-in row, as the form
    would make: see crm.auth.sessions)."""
    from crm.auth import sessions

    key = sessions.start(db.session, user, clock.now())
    db.session.commit()
    with client.session_transaction() as sess:
        sess["_user_id"] = key
        sess["_fresh"] = True


@pytest.fixture
def rep(make):
    return make.user(Role.REP, name="小王")


@pytest.fixture
def manager(make, rep):
    manager = make.user(Role.MANAGER, name="王主管")
    team = make.team("一组", manager=manager)
    rep.team = team
    manager.team = team
    db.session.commit()
    return manager


@pytest.fixture
def admin(make):
    return make.user(Role.ADMIN, name="管理员")


def _client_for(app, user):
    c = app.test_client()
    login(c, user)
    return c


@pytest.fixture
def rep_client(app, rep):
    return _client_for(app, rep)


@pytest.fixture
def manager_client(app, manager):
    return _client_for(app, manager)


@pytest.fixture
def admin_client(app, admin):
    return _client_for(app, admin)


@pytest.fixture
def api(app):
    """``api(token).get(path)`` / ``.post(path, json=…)``: a client that sends a bearer token."""

    class Api:
        def __init__(self, token: str):
            self.client = app.test_client()
            self.headers = {"Authorization": f"Bearer {token}"}

        def __getattr__(self, method):
            def call(path, **kwargs):
                headers = {**self.headers, **kwargs.pop("headers", {})}
                return getattr(self.client, method)(path, headers=headers, **kwargs)

            return call

    return Api


@pytest.fixture
def fresh_db_url(tmp_path):
    """An empty database with no tables (for migrations and ``init-db``): a new SQLite file, or a new
    PostgreSQL database ``<test db>_fresh`` created next to the test database and dropped afterwards."""
    if not IS_PG:
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    name = f"{url.database}_fresh"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
