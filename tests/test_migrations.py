"""Migrations: ``flask db upgrade`` builds a fresh database (SQLite and PostgreSQL), the models and the
migrations agree, and the ledger's append-only triggers exist and refuse UPDATE/DELETE."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from crm import clock, create_app
from crm.bootstrap import ensure_defaults
from crm.extensions import db
from tests.factories import Factory


@pytest.fixture
def migrated_app(app_config, fresh_db_url):
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": fresh_db_url})
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_upgrade_builds_every_table_of_the_models(migrated_app):
    tables = set(inspect(db.engine).get_table_names())
    assert set(db.metadata.tables) <= tables
    assert "alembic_version" in tables


# SQLite cannot reflect the expression index ix_reminders_unfanned; PostgreSQL compares it.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_models_and_migrations_do_not_differ(migrated_app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == [], "models differ from migrations/ (regenerate the initial migration):\n" + "\n".join(
        map(str, diff)
    )


def test_ledger_triggers_exist_and_refuse_update_and_delete(migrated_app):
    if db.engine.dialect.name == "sqlite":
        names = db.session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all()
        assert {"pool_events_no_update", "pool_events_no_delete"} <= set(names)
    else:
        names = db.session.scalars(
            text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'pool_events'::regclass AND NOT tgisinternal")
        ).all()
        assert "pool_events_no_change" in names
    ensure_defaults(db.session, clock.now())
    make = Factory(db.session)
    pool = make.pool()
    make.customer(pool)
    event_id = db.session.scalar(text("SELECT min(id) FROM pool_events"))
    for statement in (
        "UPDATE pool_events SET note = 'rewritten' WHERE id = :id",
        "DELETE FROM pool_events WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(text(statement), {"id": event_id})
        db.session.rollback()
    assert db.session.scalar(text("SELECT count(*) FROM pool_events WHERE id = :id"), {"id": event_id}) == 1


def test_ledger_rows_must_name_a_customer_and_keep_it(migrated_app):
    """No foreign key on pool_events.customer_id (a sweep writes 100k rows at once): triggers refuse a row
    for a customer that does not exist, in a single insert or among many, and the delete of a customer
    that has a ledger."""
    ensure_defaults(db.session, clock.now())
    make = Factory(db.session)
    customer = make.customer(make.pool())
    db.session.commit()
    insert = (
        "INSERT INTO pool_events (customer_id, kind, at) SELECT c, 'note', CURRENT_TIMESTAMP FROM ({}) AS ids"
    )
    one_bad = "SELECT 987654 AS c"
    mixed = f"SELECT {customer.id} AS c UNION ALL SELECT 987654 UNION ALL SELECT {customer.id}"
    before = db.session.scalar(text("SELECT count(*) FROM pool_events"))
    for ids in (one_bad, mixed):
        with pytest.raises(DBAPIError, match="must name a customer"):
            db.session.execute(text(insert.format(ids)))
        db.session.rollback()
    db.session.execute(text(insert.format(f"SELECT {customer.id} AS c UNION ALL SELECT {customer.id}")))
    db.session.commit()
    assert db.session.scalar(text("SELECT count(*) FROM pool_events")) == before + 2
    db.session.execute(text("DELETE FROM name_grams WHERE customer_id = :id"), {"id": customer.id})
    with pytest.raises(DBAPIError, match="cannot be deleted"):
        db.session.execute(text("DELETE FROM customers WHERE id = :id"), {"id": customer.id})
    db.session.rollback()
    assert db.session.get(type(customer), customer.id) is not None


def _tables() -> set[str]:
    db.session.remove()
    return set(inspect(db.engine).get_table_names())


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migrations_go_down_and_up_with_demo_data(migrated_app):
    """One step down and up from head, then all the way down to base and up again, with the demo data set
    present; on SQLite no batch leftovers (``_alembic_tmp_*``) and no dangling foreign keys."""
    from flask_migrate import downgrade

    from crm.demo import seed_demo

    seed_demo(db.session, customers=40, seed=7, password="demo1234", now=clock.now())
    db.session.commit()
    db.session.remove()
    downgrade(revision="-1")
    upgrade()
    downgrade(revision="base")
    assert _tables() <= {"alembic_version"}
    upgrade()
    tables = _tables()
    assert set(db.metadata.tables) <= tables
    assert not [t for t in tables if t.startswith("_alembic_tmp")]
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            assert (
                conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            )  # the app's connections keep FKs on
