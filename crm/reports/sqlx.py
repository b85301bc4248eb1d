"""SQL expressions that differ between SQLite and PostgreSQL, for the dashboard aggregates.

Timestamps are stored as naive UTC on both. Local buckets (team time zone) shift them by a fixed offset in
seconds that the caller computes in Python for the period (exact for DST-free zones such as Asia/Shanghai;
for a zone with DST the offset at the period's start is used for the whole period).
"""

from __future__ import annotations

from sqlalchemy import Date, Float, Integer, String, case, cast, func, literal, literal_column
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm.dbutil import is_postgres


def _sqlite_modifier(offset: int) -> ColumnElement:
    return literal(f"{offset:+d} seconds")


def local_hour(session: Session, expr: ColumnElement, offset: int) -> ColumnElement:
    """Hour of day 0–23 in local time."""
    if is_postgres(session):
        shifted = expr + literal(offset) * literal_column("interval '1 second'")
        return cast(func.extract("hour", shifted), Integer)
    return cast(func.strftime("%H", expr, _sqlite_modifier(offset), type_=String), Integer)


def local_weekday(session: Session, expr: ColumnElement, offset: int) -> ColumnElement:
    """Weekday 0 (Monday) … 6 (Sunday) in local time, like ``date.weekday()``."""
    if is_postgres(session):
        shifted = expr + literal(offset) * literal_column("interval '1 second'")
        return cast(func.extract("isodow", shifted), Integer) - 1
    sunday0 = cast(func.strftime("%w", expr, _sqlite_modifier(offset), type_=String), Integer)
    return (sunday0 + 6) % 7


def local_day(session: Session, expr: ColumnElement, offset: int) -> ColumnElement:
    """The local calendar date as ``YYYY-MM-DD`` text on both databases (compared and grouped as text)."""
    if is_postgres(session):
        shifted = expr + literal(offset) * literal_column("interval '1 second'")
        return func.to_char(shifted, "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", expr, _sqlite_modifier(offset), type_=String)


def local_date(session: Session, expr: ColumnElement, offset: int) -> ColumnElement:
    """The local calendar date as a DATE value (for inserting into rollup tables)."""
    if is_postgres(session):
        shifted = expr + literal(offset) * literal_column("interval '1 second'")
        return cast(shifted, Date)
    return func.date(expr, _sqlite_modifier(offset), type_=Date)


def seconds_between(session: Session, start: ColumnElement, end: ColumnElement) -> ColumnElement:
    """``end - start`` in seconds as a float."""
    if is_postgres(session):
        return cast(func.extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def utc_hour(session: Session, expr: ColumnElement) -> ColumnElement:
    """The UTC hour a timestamp falls in, as ``YYYY-MM-DD HH`` text: a cheap prefix on SQLite (stored text)."""
    if is_postgres(session):
        return func.to_char(expr, "YYYY-MM-DD HH24")
    return func.substr(expr, 1, 13, type_=String)


def utc_date_and_late(
    session: Session, expr: ColumnElement, offset: int
) -> tuple[ColumnElement, ColumnElement]:
    """(UTC date text, 1 when the local date differs from it) for a whole-hour ``offset``: grouping by these
    two cheap expressions and adding the shift in Python gives local days without per-row date arithmetic.
    """
    hours = offset // 3600
    if is_postgres(session):
        day, hour = func.to_char(expr, "YYYY-MM-DD"), cast(func.extract("hour", expr), Integer)
    else:
        day, hour = (
            func.substr(expr, 1, 10, type_=String),
            cast(func.substr(expr, 12, 2, type_=String), Integer),
        )
    if hours >= 0:
        return day, case((hour >= 24 - hours, 1), else_=0)
    return day, case((hour < -hours, -1), else_=0)
