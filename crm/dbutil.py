"""Small database helpers that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")


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


def prebuilt(build: Callable[[str], T]) -> Callable[[Session], T]:
    """A statement built once per dialect, for hot paths: no construction or cache-key work per call.

    ``build(dialect_name)`` returns the statement with a bind parameter for every value; the returned
    function gives it for a session (``session.execute(stmt(session), {...})``)."""
    built: dict[str, T] = {}

    def get(session: Session) -> T:
        name = session.get_bind().dialect.name
        stmt = built.get(name)
        if stmt is None:
            stmt = built[name] = build(name)
        return stmt

    return get
