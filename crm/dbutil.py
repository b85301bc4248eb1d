"""Small database helpers that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignore(session: Session, table: Table, conflict_columns: list[str]):
    """``INSERT … ON CONFLICT (cols) DO NOTHING`` for the session's dialect. Use ``.values(...)`` or
    ``.from_select(...)`` on the result and execute it; ``rowcount`` says how many rows were new."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    # preserve_rowcount: SQLAlchemy only keeps rowcount for UPDATE/DELETE unless asked (psycopg gives -1).
    return (
        module.insert(table)
        .on_conflict_do_nothing(index_elements=conflict_columns)
        .execution_options(preserve_rowcount=True)
    )


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
