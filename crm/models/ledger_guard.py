"""The ledger (``pool_events``) is append-only: database triggers refuse UPDATE and DELETE on it.

The same statements run from ``create_all`` (tests, ``init-db``) and from the Alembic migration.
"""

from __future__ import annotations

from sqlalchemy import DDL, event

SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS pool_events_no_update BEFORE UPDATE ON pool_events
       BEGIN SELECT RAISE(ABORT, 'pool_events is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS pool_events_no_delete BEFORE DELETE ON pool_events
       BEGIN SELECT RAISE(ABORT, 'pool_events is append-only'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION pool_events_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'pool_events is append-only'; END; $$ LANGUAGE plpgsql""",
    """DROP TRIGGER IF EXISTS pool_events_no_change ON pool_events""",
    """CREATE TRIGGER pool_events_no_change BEFORE UPDATE OR DELETE ON pool_events
       FOR EACH ROW EXECUTE FUNCTION pool_events_append_only()""",
]


def statements(dialect_name: str) -> list[str]:
    """The trigger DDL for a dialect (``sqlite`` or ``postgresql``)."""
    return {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(dialect_name, [])


_installed = False


def install_ledger_guard() -> None:
    """Attach the triggers to ``create_all`` and refuse ORM updates/deletes of ledger rows."""
    global _installed
    if _installed:
        return
    _installed = True
    from .pools import PoolEvent

    table = PoolEvent.__table__
    for sql in SQLITE_TRIGGERS:
        event.listen(table, "after_create", DDL(sql).execute_if(dialect="sqlite"))
    for sql in POSTGRES_TRIGGERS:
        event.listen(table, "after_create", DDL(sql).execute_if(dialect="postgresql"))

    def refuse(mapper, connection, target):
        raise RuntimeError("pool_events is append-only: ledger rows are never updated or deleted")

    event.listen(PoolEvent, "before_update", refuse)
    event.listen(PoolEvent, "before_delete", refuse)
