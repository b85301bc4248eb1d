"""The ledger (``pool_events``) is append-only: database triggers refuse UPDATE and DELETE on it.

Its ``customer_id`` is kept honest by triggers too, instead of a foreign key: a ledger row must name a
customer, and a customer with ledger rows cannot be deleted (the app never deletes customers; merges keep
both rows). On PostgreSQL the check runs once per statement over the statement's new rows (a transition
table and one anti-join): a sweep writes ~100,000 ledger rows at once, and a foreign key's per-row check
(a trigger call, an index probe and a row lock each) was 0.45 s of a 7 s sweep. SQLite checks per row, as
its foreign keys did.

The same statements run from ``create_all`` (tests, ``init-db``) and from the Alembic migration.
"""

from __future__ import annotations

from sqlalchemy import DDL, event

SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS pool_events_no_update BEFORE UPDATE ON pool_events
       BEGIN SELECT RAISE(ABORT, 'pool_events is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS pool_events_no_delete BEFORE DELETE ON pool_events
       BEGIN SELECT RAISE(ABORT, 'pool_events is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS pool_events_customer_exists BEFORE INSERT ON pool_events
       WHEN NOT EXISTS (SELECT 1 FROM customers WHERE id = NEW.customer_id)
       BEGIN SELECT RAISE(ABORT, 'pool_events.customer_id must name a customer'); END""",
    """CREATE TRIGGER IF NOT EXISTS customers_keep_ledger BEFORE DELETE ON customers
       WHEN EXISTS (SELECT 1 FROM pool_events WHERE customer_id = OLD.id)
       BEGIN SELECT RAISE(ABORT, 'a customer with ledger rows (pool_events) cannot be deleted'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION pool_events_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'pool_events is append-only'; END; $$ LANGUAGE plpgsql""",
    """DROP TRIGGER IF EXISTS pool_events_no_change ON pool_events""",
    """CREATE TRIGGER pool_events_no_change BEFORE UPDATE OR DELETE ON pool_events
       FOR EACH ROW EXECUTE FUNCTION pool_events_append_only()""",
    """CREATE OR REPLACE FUNCTION pool_events_customer_exists() RETURNS trigger AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM new_events n
                    WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = n.customer_id)) THEN
           RAISE EXCEPTION 'pool_events.customer_id must name a customer' USING ERRCODE = 'foreign_key_violation';
         END IF;
         RETURN NULL;
       END; $$ LANGUAGE plpgsql""",
    """DROP TRIGGER IF EXISTS pool_events_customer_exists ON pool_events""",
    """CREATE TRIGGER pool_events_customer_exists AFTER INSERT ON pool_events
       REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION pool_events_customer_exists()""",
    """CREATE OR REPLACE FUNCTION customers_keep_ledger() RETURNS trigger AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM gone g JOIN pool_events e ON e.customer_id = g.id) THEN
           RAISE EXCEPTION 'a customer with ledger rows (pool_events) cannot be deleted' USING ERRCODE = 'foreign_key_violation';
         END IF;
         RETURN NULL;
       END; $$ LANGUAGE plpgsql""",
    """DROP TRIGGER IF EXISTS customers_keep_ledger ON customers""",
    """CREATE TRIGGER customers_keep_ledger AFTER DELETE ON customers
       REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION customers_keep_ledger()""",
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

    # After every table (the triggers name customers as well as pool_events).
    metadata = PoolEvent.metadata
    for sql in SQLITE_TRIGGERS:
        event.listen(metadata, "after_create", DDL(sql).execute_if(dialect="sqlite"))
    for sql in POSTGRES_TRIGGERS:
        event.listen(metadata, "after_create", DDL(sql).execute_if(dialect="postgresql"))

    def refuse(mapper, connection, target):
        raise RuntimeError("pool_events is append-only: ledger rows are never updated or deleted")

    event.listen(PoolEvent, "before_update", refuse)
    event.listen(PoolEvent, "before_delete", refuse)
