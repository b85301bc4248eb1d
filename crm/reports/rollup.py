"""The daily pool rollup (``report_pool_daily``): per local day, pool, person and intake channel, the
ledger flows, the time-in-pool and claim-to-first-contact sums and the follow-ups.

The same SELECT (``pool_daily_select``) fills the table and computes the days the table does not cover yet,
so the dashboard reads "rollup for past days + live for the rest" and both agree by construction. Building
is idempotent: it deletes the days it recomputes (the last ``REDO_DAYS`` local days each run, since spot
checks and late entries change recent days) and inserts them again in one ``INSERT … SELECT``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import case, delete, func, literal, select, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Select

from crm import clock
from crm.models import Customer, EventKind, FollowUp, PoolEvent, ReportPoolDaily, ReportRollup
from crm.reports import sqlx

NAME = "pool_daily"
REDO_DAYS = 7
INFLOW = (EventKind.CREATED, EventKind.RELEASED, EventKind.RECYCLED)
OUTFLOW = (EventKind.CLAIMED, EventKind.RECLAIMED, EventKind.ASSIGNED, EventKind.AUTO_ASSIGNED)
MEASURES = ("inflow", "outflow", "created", "timed", "in_pool_secs", "contacted", "contact_secs", "followups")
KEYS = ("day", "pool_id", "user_id", "channel")


def ledger_person():
    """The person a ledger row belongs to on the dashboards: who got it, else who gave it up, else who
    acted (0: nobody, e.g. a lead created by intake)."""
    return func.coalesce(PoolEvent.to_user_id, PoolEvent.from_user_id, PoolEvent.actor_id, 0)


def pool_daily_select(session: Session, start: datetime, end: datetime, offset: int) -> Select:
    """Rows keyed (day, pool_id, user_id, channel) with the measures, for UTC instants [start, end)."""
    c = aliased(Customer)
    entry = aliased(PoolEvent)
    is_out = PoolEvent.kind.in_(OUTFLOW)
    entered = (
        select(func.max(entry.at))
        .where(entry.customer_id == PoolEvent.customer_id, entry.kind.in_(INFLOW), entry.at <= PoolEvent.at)
        .correlate(PoolEvent)
        .scalar_subquery()
    )
    first = (
        select(func.min(FollowUp.at))
        .where(FollowUp.customer_id == PoolEvent.customer_id, FollowUp.at >= PoolEvent.at,
               FollowUp.user_id == PoolEvent.to_user_id, FollowUp.is_fake.is_(False))
        .correlate(PoolEvent)
        .scalar_subquery()
    )  # fmt: skip
    moves = (
        select(
            PoolEvent.at.label("at"),
            PoolEvent.kind.label("kind"),
            PoolEvent.pool_id.label("pool_id"),
            ledger_person().label("user_id"),
            func.coalesce(c.channel, "").label("channel"),
            case((is_out, sqlx.seconds_between(session, entered, PoolEvent.at))).label("in_pool"),
            case((is_out, sqlx.seconds_between(session, PoolEvent.at, first))).label("to_contact"),
        )
        .select_from(PoolEvent)
        .join(c, c.id == PoolEvent.customer_id)
        .where(PoolEvent.kind.in_(INFLOW + OUTFLOW), PoolEvent.at >= start, PoolEvent.at < end,
               PoolEvent.pool_id.is_not(None))
    ).subquery()  # fmt: skip
    one = literal(1)
    zero = literal(0)
    ledger = select(
        sqlx.local_date(session, moves.c.at, offset).label("day"),
        moves.c.pool_id,
        moves.c.user_id,
        moves.c.channel,
        case((moves.c.kind.in_(INFLOW), one), else_=zero).label("inflow"),
        case((moves.c.kind.in_(OUTFLOW), one), else_=zero).label("outflow"),
        case((moves.c.kind == EventKind.CREATED, one), else_=zero).label("created"),
        case((moves.c.in_pool.is_not(None), one), else_=zero).label("timed"),
        func.coalesce(moves.c.in_pool, 0.0).label("in_pool_secs"),
        case((moves.c.to_contact.is_not(None), one), else_=zero).label("contacted"),
        func.coalesce(moves.c.to_contact, 0.0).label("contact_secs"),
        zero.label("followups"),
    )
    fc = aliased(Customer)
    fus = (
        select(
            sqlx.local_date(session, FollowUp.at, offset).label("day"),
            fc.pool_id.label("pool_id"),
            FollowUp.user_id.label("user_id"),
            func.coalesce(fc.channel, "").label("channel"),
            *[zero.label(m) for m in ("inflow", "outflow", "created", "timed")],
            literal(0.0).label("in_pool_secs"),
            zero.label("contacted"),
            literal(0.0).label("contact_secs"),
            one.label("followups"),
        )
        .select_from(FollowUp)
        .join(fc, fc.id == FollowUp.customer_id)
        .where(FollowUp.is_fake.is_(False), FollowUp.at >= start, FollowUp.at < end, fc.pool_id.is_not(None))
    )
    rows = union_all(ledger, fus).subquery()
    keys = [rows.c[k] for k in KEYS]
    return select(*keys, *[func.sum(rows.c[m]).label(m) for m in MEASURES]).group_by(*keys)


def covered_until(session: Session, tz: str) -> date | None:
    """Days before this local date are in the rollup (None: not built, or built for another zone)."""
    state = session.get(ReportRollup, NAME)
    if state is None or state.tz != tz:
        return None
    return state.built_until


def source(session: Session, start: date, end: date, tz: str, offset: int) -> Select:
    """Daily rows for local days [start, end] (inclusive): from the rollup where built, live otherwise."""
    until = covered_until(session, tz)
    parts = []
    live_from = start
    if until is not None and until > start:
        last = min(end + timedelta(days=1), until)
        t = ReportPoolDaily
        parts.append(
            select(*[getattr(t, k) for k in KEYS], *[getattr(t, m) for m in MEASURES]).where(
                t.day >= start, t.day < last
            )
        )
        live_from = last
    if live_from <= end:
        parts.append(
            pool_daily_select(
                session, clock.day_bounds(live_from, tz)[0], clock.day_bounds(end, tz)[1], offset
            )
        )
    return union_all(*parts) if len(parts) > 1 else parts[0]


def build(session: Session, now: datetime, rebuild: bool = False) -> dict:
    """Bring the rollup up to yesterday (local). Recomputes the last ``REDO_DAYS`` days, or everything with
    ``rebuild`` (or when the time zone changed). Safe to run again; returns what it did."""
    tz = clock.default_tz_name()
    today = clock.local_today(tz, now)
    until = None if rebuild else covered_until(session, tz)
    if until is None:
        earliest = session.scalar(select(func.min(PoolEvent.at)))
        first_fu = session.scalar(select(func.min(FollowUp.at)))
        candidates = [clock.local(x, tz).date() for x in (earliest, first_fu) if x is not None]
        start_day = min(candidates) if candidates else today
        session.execute(delete(ReportPoolDaily))
    else:
        start_day = min(until, today - timedelta(days=REDO_DAYS))
        session.execute(delete(ReportPoolDaily).where(ReportPoolDaily.day >= start_day))
    start, end = clock.day_bounds(start_day, tz)[0], clock.day_bounds(today, tz)[0]
    offset = int(clock.zone(tz).utcoffset(start.replace(tzinfo=None)).total_seconds())
    inserted = 0
    if start < end:
        stmt = (
            ReportPoolDaily.__table__.insert()
            .from_select(list(KEYS + MEASURES), pool_daily_select(session, start, end, offset))
            .execution_options(preserve_rowcount=True)
        )
        inserted = session.execute(stmt).rowcount
    state = session.get(ReportRollup, NAME)
    if state is None:
        state = ReportRollup(name=NAME, built_until=today, tz=tz, built_at=now)
        session.add(state)
    else:
        state.built_until, state.tz, state.built_at = today, tz, now
    session.flush()
    return {"from": start_day.isoformat(), "until": today.isoformat(), "rows": int(inserted or 0)}
