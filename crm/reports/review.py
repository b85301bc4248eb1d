"""上周公海复盘: the weekly pool review page and its digest (a reminder of kind ``weekly_digest`` to each
manager and admin, delivered by the reminder dispatch over their channels; one per user and week)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm import clock
from crm.models import Customer, EventKind, Pool, PoolEvent, ReminderKind, Role, User
from crm.notify import notify
from crm.reports import services
from crm.reports.filters import ReportFilter, ReportInputError, parse_filter, week_bounds

STUCK_DAYS = 30  # an unowned customer this long in a pool is "stuck"
TOP_REASONS = 3


def parse_week(value: str | None, now: datetime) -> date:
    """The Monday of the week asked for (any day of it, ``YYYY-MM-DD``); default last week."""
    today = clock.local_today(None, now)
    if not value:
        return week_bounds(today)[0] - timedelta(days=7)
    try:
        day = date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ReportInputError(
            {"week": _("周不是有效的日期 (应为 YYYY-MM-DD): %(v)s", v=value[:20])}
        ) from exc
    if day > today:
        raise ReportInputError({"week": _("不能查看未来的周。")})
    return week_bounds(day)[0]


def week_filter(session: Session, viewer: User, monday: date, now: datetime) -> ReportFilter:
    args = {"start": monday.isoformat(), "end": (monday + timedelta(days=6)).isoformat()}
    return parse_filter(session, args, viewer, now)


def weekly_review(session: Session, f: ReportFilter, now: datetime) -> dict:
    """Per pool: this week's KPIs and last week's, top recycle reasons, claims by rep, stuck customers."""
    before = f.shifted(f.start - timedelta(days=7), f.end - timedelta(days=7))
    this_week, last_week = services.pools(session, f), services.pools(session, before)
    previous = {r.pool_id: r for r in last_week["rows"]}
    ledger = services.ledger_where(f)
    reasons: dict[int, list[tuple[str, int]]] = {}
    rq = (
        select(PoolEvent.pool_id, PoolEvent.reason, func.count())
        .where(PoolEvent.kind == EventKind.RECYCLED, *ledger)
        .group_by(PoolEvent.pool_id, PoolEvent.reason)
        .order_by(func.count().desc())
    )
    for pid, reason, n in session.execute(rq):
        if len(reasons.setdefault(pid, [])) < TOP_REASONS:
            reasons[pid].append((reason or _("未注明"), int(n)))
    claims: dict[int, list[tuple[str, int]]] = {}
    cq = (
        select(PoolEvent.pool_id, User.name, func.count())
        .join(User, User.id == PoolEvent.to_user_id)
        .where(PoolEvent.kind.in_(services.OUTFLOW), *ledger)
        .group_by(PoolEvent.pool_id, User.name)
        .order_by(func.count().desc(), User.name)
    )
    for pid, name, n in session.execute(cq):
        claims.setdefault(pid, []).append((name, int(n)))
    stuck_before = now - timedelta(days=STUCK_DAYS)
    sq = (
        select(Customer.id, Customer.name, Customer.pool_id, Customer.pool_entered_at, Customer.score)
        .where(Customer.owner_id.is_(None), Customer.merged_into_id.is_(None),
               Customer.pool_entered_at < stuck_before, Customer.pool_id.is_not(None))
        .order_by(Customer.pool_entered_at, Customer.id)
        .limit(20)
    )  # fmt: skip
    if f.pool_id is not None:
        sq = sq.where(Customer.pool_id == f.pool_id)
    names = dict(session.execute(select(Pool.id, Pool.name)).all())
    stuck = [
        {"id": cid, "name": name, "pool": names.get(pid, ""), "days": (now - entered).days, "score": score}
        for cid, name, pid, entered, score in session.execute(sq)
    ]
    pools = [
        {"row": r, "prev": previous.get(r.pool_id), "reasons": reasons.get(r.pool_id, []),
         "claims": claims.get(r.pool_id, [])}
        for r in this_week["rows"]
    ]  # fmt: skip
    following = f.start + timedelta(days=7)
    return {"f": f, "pools": pools, "stuck": stuck, "stuck_days": STUCK_DAYS,
            "prev_week": (f.start - timedelta(days=7)).isoformat(),
            "next_week": following.isoformat() if following <= clock.local_today(None, now) else None}  # fmt: skip


def digest_text(data: dict) -> str:
    """The digest body: one line per pool with activity, this week vs the week before."""
    lines = []
    for p in data["pools"]:
        r, prev = p["row"], p["prev"]
        if not (r.inflow or r.outflow or (prev and (prev.inflow or prev.outflow))):
            continue
        lines.append(
            _("%(pool)s: 流入 %(i)s (上周 %(pi)s), 流出 %(o)s (上周 %(po)s), 当前池内 %(s)s",
              pool=r.name, i=r.inflow, pi=prev.inflow if prev else 0, o=r.outflow,
              po=prev.outflow if prev else 0, s=r.stock)
        )  # fmt: skip
    if data["stuck"]:
        lines.append(
            _("滞留超过 %(d)s 天的客户: %(n)s 位 (见复盘页)", d=data["stuck_days"], n=len(data["stuck"]))
        )
    return "\n".join(lines) or _("上周公海没有流转。")


def send_weekly_digest(session: Session, now: datetime) -> int:
    """Give every active manager and admin last week's pool review as a reminder (delivered over their
    channels by the reminder dispatch). Idempotent per user and week (``digest:<user>:<monday>``)."""
    if not current_app.config.get("REPORTS_WEEKLY_DIGEST", True):
        return 0
    monday = parse_week(None, now)
    due = clock.at_local(week_bounds(clock.local_today(None, now))[0], 9)
    people = session.scalars(
        select(User).where(User.active.is_(True), User.role.in_((Role.MANAGER, Role.ADMIN))).order_by(User.id)
    ).all()
    made = 0
    for user in people:
        key = f"digest:{user.id}:{monday.isoformat()}"
        f = week_filter(session, user, monday, now)
        body = digest_text(weekly_review(session, f, now))
        title = _("上周公海复盘 %(a)s – %(b)s", a=monday.strftime("%m/%d"),
                  b=(monday + timedelta(days=6)).strftime("%m/%d"))  # fmt: skip
        made += notify(session, user_id=user.id, kind=ReminderKind.WEEKLY_DIGEST, title=title,
                       unique_key=key, due_at=due, now=now, body=body)  # fmt: skip
    return made
