"""SQL expressions that differ between SQLite and PostgreSQL, for the set-based reminder statements."""

from __future__ import annotations

from sqlalchemy import String, and_, case, cast, func, literal, literal_column, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from crm.dbutil import is_postgres
from crm.models import Team, User


def plus_seconds(session: Session, expr: ColumnElement, seconds: ColumnElement | int) -> ColumnElement:
    """``expr + seconds`` for a ``UTCDateTime`` expression, in the stored format of each database.

    SQLite stores ``YYYY-MM-DD HH:MM:SS.ffffff`` text: shift the whole seconds with ``strftime`` and keep
    the original fraction, so the result sorts and parses like any stored value.
    """
    if not isinstance(seconds, ColumnElement):
        seconds = literal(int(seconds))
    if is_postgres(session):
        return expr + seconds * literal_column("interval '1 second'")
    modifier = literal("+") + cast(seconds, String) + literal(" seconds")
    shifted = func.strftime("%Y-%m-%d %H:%M:%S", expr, modifier, type_=String)
    return shifted + func.substr(expr, 20, type_=String)


def as_text(expr: ColumnElement) -> ColumnElement:
    """A value as text for building unique keys (the format only needs to be stable per database)."""
    return cast(expr, String)


def manager_id_of(user_alias=None):
    """A scalar subquery: the manager of ``user_alias`` by the rule of ``crm.auth.services.manager_of``
    (explicit manager, else the team's manager; never the user themself), for set-based statements.

    Returns ``(expression, user_alias)``; ``tests/test_reminders_generate.py`` checks that it agrees with
    ``manager_of`` case by case.
    """
    u = user_alias if user_alias is not None else aliased(User)
    team_manager = (
        select(Team.manager_id)
        .where(Team.id == u.team_id, Team.manager_id != u.id)
        .correlate(u)
        .scalar_subquery()
    )
    expr = case(
        (and_(u.manager_id.is_not(None), u.manager_id != u.id), u.manager_id),
        else_=team_manager,
    )
    return expr, u
