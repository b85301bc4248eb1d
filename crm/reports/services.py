"""Dashboard panels (看板): one aggregate query (or a few) per panel, set-based, on SQLite and PostgreSQL.

Every function takes ``(session, f)`` where ``f`` is a validated ``ReportFilter`` already scoped to what the
viewer may see (``crm.reports.filters``), and returns plain data for the template and the CSV export.
Python only merges per-rep / per-pool aggregate rows; it never loops over ledger or follow-up rows.

Definitions where the issue is silent (also shown under each panel):
- Funnel: a customer "reaches" a bucket in the period when it has a stage change in the period into that
  bucket or a later one (buckets ordered by their first stage's position); 输单 counted apart.
- New customers of a rep: customers they took in the period (claim, reclaim, assignment, transfer to them).
- Time in stage: stays that ended in the period (the customer left the stage), from the previous stage
  change of the same customer/opportunity to this one, by the rep who moved it on.
- Pool inflow: created in / released to / recycled to the pool; outflow: claimed, reclaimed, assigned.
  Turnover = outflow ÷ (outflow + customers in the pool now).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, case, func, literal, select, true
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Select

from crm import clock
from crm.models import (
    Customer,
    DuplicateConflict,
    EventKind,
    FollowUp,
    Opportunity,
    Pool,
    PoolEvent,
    Role,
    Stage,
    StageChange,
    User,
)
from crm.reports import rollup, sqlx
from crm.reports.filters import ReportFilter
from crm.scoring import config as scoring_config


def N_(text: str) -> str:
    """Mark a msgid for extraction; it is translated where shown (``_(label)`` in the templates)."""
    return text


FUNNEL_LABELS = {"lead": N_("线索"), "communication": N_("沟通"), "intent": N_("意向"), "deal": N_("成交"),
                 "lost": N_("输单")}  # fmt: skip
UNKNOWN_CHANNEL = N_("未知")
TAKEN = (EventKind.CLAIMED, EventKind.RECLAIMED, EventKind.ASSIGNED, EventKind.AUTO_ASSIGNED,
         EventKind.TRANSFERRED)  # fmt: skip
INFLOW, OUTFLOW = rollup.INFLOW, rollup.OUTFLOW
PANELS = ("funnel", "reps", "heatmap", "pools", "channels")


def ratio(part: float | int | None, whole: float | int | None) -> float | None:
    """``part ÷ whole``, None when the whole is zero (shown as —, never as 0%)."""
    if not whole:
        return None
    return float(part or 0) / float(whole)


# ---- shared filter pieces ----


def _period(col, f: ReportFilter):
    return and_(col >= f.start_utc, col < f.end_utc)


def _people(col, f: ReportFilter):
    return true() if f.user_ids is None else col.in_(sorted(f.user_ids))


def _customer_scope(query: Select, customer_col, f: ReportFilter) -> Select:
    """Restrict to customers of the chosen pool (home pool) and intake channel, joining only when asked."""
    if f.pool_id is None and f.channel is None:
        return query
    c = aliased(Customer)
    query = query.join(c, c.id == customer_col)
    if f.pool_id is not None:
        query = query.where(c.pool_id == f.pool_id)
    if f.channel is not None:
        query = query.where(c.channel == f.channel)
    return query


# ---- 1. funnel ----


@dataclass
class FunnelStep:
    bucket: str
    label: str
    count: int
    rate: float | None  # from the previous step


def funnel_order(session: Session) -> list[str]:
    """Open and won buckets in pipeline order (by the first position of a stage in each bucket)."""
    rows = session.execute(
        select(Stage.funnel, func.min(Stage.position))
        .where(Stage.funnel != "lost")
        .group_by(Stage.funnel)
        .order_by(func.min(Stage.position))
    ).all()
    return [bucket for bucket, _pos in rows]


def funnel(session: Session, f: ReportFilter) -> dict:
    """Customers reaching each bucket in the period and stage-to-stage conversion; 输单 apart."""
    order = funnel_order(session)
    rank = case({bucket: i + 1 for i, bucket in enumerate(order)}, value=Stage.funnel, else_=0)
    inner = (
        select(
            StageChange.customer_id,
            func.max(rank).label("r"),
            func.max(case((Stage.funnel == "lost", 1), else_=0)).label("lost"),
        )
        .join(Stage, Stage.id == StageChange.to_stage_id)
        .where(_period(StageChange.at, f), _people(StageChange.user_id, f))
        .group_by(StageChange.customer_id)
    )
    inner = _customer_scope(inner, StageChange.customer_id, f).subquery()
    cols = [func.coalesce(func.sum(case((inner.c.r >= i + 1, 1), else_=0)), 0) for i in range(len(order))]
    cols.append(func.coalesce(func.sum(inner.c.lost), 0))
    counts = [int(v) for v in session.execute(select(*cols)).one()] if order else [0]
    steps, previous = [], None
    for bucket, n in zip(order, counts, strict=False):
        steps.append(FunnelStep(bucket, FUNNEL_LABELS.get(bucket, bucket), n, ratio(n, previous)))
        previous = n
    lost = counts[-1]
    return {"steps": steps, "lost": lost, "lost_rate": ratio(lost, steps[0].count if steps else 0)}


def funnel_table(data: dict) -> tuple[list[str], list[list]]:
    rows = [[s.label, s.count, _pct(s.rate)] for s in data["steps"]]
    rows.append([FUNNEL_LABELS["lost"], data["lost"], _pct(data["lost_rate"])])
    return ["阶段", "客户数", "转化率"], rows


# ---- 2. per rep ----


@dataclass
class RepRow:
    user_id: int
    name: str
    new_customers: int = 0
    deals: int = 0
    amount: Decimal = Decimal("0")
    followups: int = 0
    hot_followups: int = 0
    per_day: float = 0.0
    stage_days: dict[int, float] = field(default_factory=dict)

    @property
    def hot_share(self) -> float | None:
        return ratio(self.hot_followups, self.followups)


def _grouped(session: Session, query: Select) -> dict[int, tuple]:
    return {row[0]: tuple(row[1:]) for row in session.execute(query)}


def reps(session: Session, f: ReportFilter) -> dict:
    """Per rep: new customers, deals and amount, follow-ups per day, days spent per stage, hot share."""
    hot = scoring_config.get(session)["hot_threshold"]
    people_q = select(User.id, User.name).where(_people(User.id, f), User.role.in_((Role.REP, Role.MANAGER)))
    people = dict(session.execute(people_q.order_by(User.name)).all())

    taken = select(PoolEvent.to_user_id, func.count()).where(
        PoolEvent.kind.in_(TAKEN), _period(PoolEvent.at, f), _people(PoolEvent.to_user_id, f),
        PoolEvent.to_user_id.is_not(None),
    )  # fmt: skip
    taken = _customer_scope(taken, PoolEvent.customer_id, f).group_by(PoolEvent.to_user_id)

    deals = select(Opportunity.owner_id, func.count(), func.coalesce(func.sum(Opportunity.amount), 0)).where(
        Opportunity.status == "won", _period(Opportunity.closed_at, f), _people(Opportunity.owner_id, f),
        Opportunity.owner_id.is_not(None),
    )  # fmt: skip
    deals = _customer_scope(deals, Opportunity.customer_id, f).group_by(Opportunity.owner_id)

    fus = select(
        FollowUp.user_id,
        func.count(),
        func.coalesce(func.sum(case((FollowUp.score_at >= hot, 1), else_=0)), 0),
    ).where(FollowUp.is_fake.is_(False), _period(FollowUp.at, f), _people(FollowUp.user_id, f))
    fus = _customer_scope(fus, FollowUp.customer_id, f).group_by(FollowUp.user_id)

    stays = stage_stays(session, f)
    taken_by, deals_by, fus_by = _grouped(session, taken), _grouped(session, deals), _grouped(session, fus)
    rows = []
    for uid, name in people.items():
        n_fu, n_hot = fus_by.get(uid, (0, 0))
        n_deals, amount = deals_by.get(uid, (0, 0))
        row = RepRow(
            uid, name, int(taken_by.get(uid, (0,))[0]), int(n_deals), Decimal(str(amount)), int(n_fu),
            int(n_hot), round(int(n_fu) / f.days, 2), stays.get(uid, {}),
        )  # fmt: skip
        if row.new_customers or row.deals or row.followups or row.stage_days:
            rows.append(row)
    stages = dict(session.execute(select(Stage.id, Stage.name).order_by(Stage.position)).all())
    return {"rows": rows, "stages": stages, "hot": hot, "days": f.days}


def stage_stays(session: Session, f: ReportFilter) -> dict[int, dict[int, float]]:
    """{user: {stage: average days}} for stays that ended in the period, by the rep who moved it on."""
    prev = aliased(StageChange)
    started = (
        select(func.max(prev.at))
        .where(
            prev.customer_id == StageChange.customer_id,
            prev.opportunity_id.is_not_distinct_from(StageChange.opportunity_id),
            prev.at < StageChange.at,
        )
        .correlate(StageChange)
        .scalar_subquery()
    )
    moves = select(
        StageChange.user_id.label("user_id"),
        StageChange.from_stage_id.label("stage_id"),
        sqlx.seconds_between(session, started, StageChange.at).label("secs"),
    ).where(
        _period(StageChange.at, f), _people(StageChange.user_id, f), StageChange.from_stage_id.is_not(None),
        StageChange.user_id.is_not(None),
    )  # fmt: skip
    moves = _customer_scope(moves, StageChange.customer_id, f).subquery()
    out: dict[int, dict[int, float]] = {}
    query = (
        select(moves.c.user_id, moves.c.stage_id, func.avg(moves.c.secs))
        .where(moves.c.secs.is_not(None))
        .group_by(moves.c.user_id, moves.c.stage_id)
    )
    for uid, stage_id, secs in session.execute(query):
        out.setdefault(uid, {})[stage_id] = round(float(secs) / 86400.0, 1)
    return out


def reps_table(data: dict) -> tuple[list[str], list[list]]:
    stages = data["stages"]
    head = ["销售", "新增客户", "成交数", "成交金额", "跟进数", "日均跟进", "高意向跟进占比"]
    head += [f"{name}(天)" for name in stages.values()]
    rows = []
    for r in data["rows"]:
        line = [
            r.name,
            r.new_customers,
            r.deals,
            f"{r.amount:.2f}",
            r.followups,
            r.per_day,
            _pct(r.hot_share),
        ]
        line += [r.stage_days.get(sid, "") for sid in stages]
        rows.append(line)
    return head, rows


# ---- 3. revisit heatmaps ----


def heatmap(session: Session, f: ReportFilter) -> dict:
    """Real follow-ups by local weekday × hour, and by rep × local day (team time zone)."""
    # Follow-ups are counted per UTC hour in SQL (a text prefix, no per-row date arithmetic) and the few
    # hundred hour buckets are placed in local weekday × hour in Python: exact for any zone, DST included.
    base = [FollowUp.is_fake.is_(False), _period(FollowUp.at, f), _people(FollowUp.user_id, f)]
    hour = sqlx.utc_hour(session, FollowUp.at)
    q1 = _customer_scope(select(hour, func.count()).where(*base), FollowUp.customer_id, f).group_by(hour)
    grid = [[0] * 24 for _ in range(7)]
    zone = clock.zone(f.tz)
    for bucket, n in session.execute(q1):
        at = datetime.strptime(str(bucket)[:13], "%Y-%m-%d %H").replace(tzinfo=UTC).astimezone(zone)
        grid[at.weekday()][at.hour] += int(n)
    by_rep: dict[int, dict[str, int]] = {}
    off = f.offset
    if off % 3600 == 0:  # whole-hour zones: UTC date + "late" flag, folded here
        day, late = sqlx.utc_date_and_late(session, FollowUp.at, off)
        q2 = select(FollowUp.user_id, day, late, func.count()).where(*base)
        q2 = _customer_scope(q2, FollowUp.customer_id, f).group_by(FollowUp.user_id, day, late)
        for uid, d, shift, n in session.execute(q2):
            local = (date.fromisoformat(str(d)[:10]) + timedelta(days=int(shift))).isoformat()
            cells = by_rep.setdefault(uid, {})
            cells[local] = cells.get(local, 0) + int(n)
    else:
        day = sqlx.local_day(session, FollowUp.at, off)
        q2 = select(FollowUp.user_id, day, func.count()).where(*base)
        q2 = _customer_scope(q2, FollowUp.customer_id, f).group_by(FollowUp.user_id, day)
        for uid, d, n in session.execute(q2):
            by_rep.setdefault(uid, {})[str(d)[:10]] = int(n)
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(list(by_rep) or [-1]))).all())
    days = [(f.start + timedelta(days=i)).isoformat() for i in range(f.days)]
    reps_rows = sorted(((names.get(uid, "?"), uid, cells) for uid, cells in by_rep.items()))
    # The chart shows the busiest reps (a phone cannot show 200 rows); the CSV has everyone.
    busiest = sorted(reps_rows, key=lambda r: -sum(r[2].values()))[:CHART_REPS]
    chart_rows = sorted(busiest)
    peak = max((max(r) for r in grid), default=0)
    peak_day = max((max(c.values()) for _n, _u, c in reps_rows), default=0)
    return {
        "grid": grid,
        "peak": peak,
        "days": days,
        "reps": reps_rows,
        "chart_reps": chart_rows,
        "peak_day": peak_day,
    }


CHART_REPS = 12
WEEKDAYS = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"]


def heatmap_table(data: dict) -> tuple[list[str], list[list]]:
    head = ["星期"] + [f"{h:02d}时" for h in range(24)]
    return head, [[WEEKDAYS[i], *row] for i, row in enumerate(data["grid"])]


def heatmap_reps_table(data: dict) -> tuple[list[str], list[list]]:
    head = ["销售", *data["days"]]
    return head, [[name, *[cells.get(d, 0) for d in data["days"]]] for name, _uid, cells in data["reps"]]


# ---- 4. pool KPIs ----


@dataclass
class PoolRow:
    pool_id: int
    name: str
    inflow: int = 0
    outflow: int = 0
    stock: int = 0
    avg_days_in_pool: float | None = None
    claim_to_contact_hours: float | None = None
    followups: int = 0
    reps: int = 0
    won: int = 0
    closed: int = 0
    conflicts: int = 0
    created: int = 0

    @property
    def turnover(self) -> float | None:
        return ratio(self.outflow, self.outflow + self.stock)

    @property
    def followups_per_rep(self) -> float | None:
        return round(self.followups / self.reps, 1) if self.reps else None

    @property
    def win_rate(self) -> float | None:
        return ratio(self.won, self.closed)

    @property
    def conflict_rate(self) -> float | None:
        return ratio(self.conflicts, self.created)


def _ledger_people(f: ReportFilter):
    """A manager sees the moves of their team's people (see ``rollup.ledger_person``)."""
    if f.user_ids is None:
        return true()
    return rollup.ledger_person().in_(sorted(f.user_ids))


def ledger_where(f: ReportFilter) -> list:
    """Ledger rows of the period, people and pool of ``f`` (the channel needs a join, see below)."""
    where = [_period(PoolEvent.at, f), _ledger_people(f), PoolEvent.pool_id.is_not(None)]
    if f.pool_id is not None:
        where.append(PoolEvent.pool_id == f.pool_id)
    return where


def _ledger_scope(query: Select, f: ReportFilter) -> Select:
    query = query.where(*ledger_where(f))
    if f.channel is not None:
        c = aliased(Customer)
        query = query.join(c, c.id == PoolEvent.customer_id).where(c.channel == f.channel)
    return query


def pools(session: Session, f: ReportFilter) -> dict:
    """Per pool: inflow/outflow, turnover, time in pool, claim → first contact, follow-ups per rep, pool
    win rate, conflict rate; plus inflow/outflow per local week for the chart."""
    pool_q = select(Pool.id, Pool.name).where(Pool.deleted_at.is_(None))
    if f.pool_id is not None:
        pool_q = pool_q.where(Pool.id == f.pool_id)
    rows = {pid: PoolRow(pid, name) for pid, name in session.execute(pool_q.order_by(Pool.id))}
    # One pass over the daily rows: per pool and day (the days fold into weeks for the chart), and the
    # distinct people with follow-ups per pool.
    daily = _pool_daily(session, f)
    per_day = select(daily.c.pool_id, daily.c.day, *[func.sum(daily.c[m]) for m in rollup.MEASURES]).group_by(
        daily.c.pool_id, daily.c.day
    )
    sums: dict[int, list[float]] = {}
    weeks = _empty_weeks(f)
    for pid, day, *values in session.execute(per_day):
        acc = sums.setdefault(pid, [0.0] * len(rollup.MEASURES))
        for i, v in enumerate(values):
            acc[i] += float(v or 0)
        local = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
        bucket = weeks[local - timedelta(days=local.weekday())]
        bucket["inflow"] += int(values[0] or 0)
        bucket["outflow"] += int(values[1] or 0)
    people = select(daily.c.pool_id, func.count(func.distinct(daily.c.user_id))).where(daily.c.followups > 0)
    reps_by_pool = dict(session.execute(people.group_by(daily.c.pool_id)).all())
    for pid, (inflow, outflow, created, timed, in_pool, contacted, to_contact, fus) in sums.items():
        if pid not in rows:
            continue
        row = rows[pid]
        row.inflow, row.outflow, row.created, row.followups = (
            int(inflow),
            int(outflow),
            int(created),
            int(fus),
        )
        row.reps = int(reps_by_pool.get(pid, 0))
        if timed:
            row.avg_days_in_pool = round(in_pool / timed / 86400, 1)
        if contacted:
            row.claim_to_contact_hours = round(to_contact / contacted / 3600, 1)

    stock = select(Customer.pool_id, func.count()).where(
        Customer.owner_id.is_(None),
        Customer.merged_into_id.is_(None),
        Customer.pool_id.in_(list(rows) or [-1]),
    )
    if f.channel is not None:
        stock = stock.where(Customer.channel == f.channel)
    for pid, n in session.execute(stock.group_by(Customer.pool_id)):
        rows[pid].stock = int(n)

    c = aliased(Customer)
    win = (
        select(c.pool_id, func.sum(case((Opportunity.status == "won", 1), else_=0)), func.count())
        .select_from(Opportunity)
        .join(c, c.id == Opportunity.customer_id)
        .where(Opportunity.from_pool.is_(True), Opportunity.status.in_(("won", "lost")),
               _period(Opportunity.closed_at, f), _people(Opportunity.owner_id, f),
               c.pool_id.in_(list(rows) or [-1]))
    )  # fmt: skip
    if f.channel is not None:
        win = win.where(c.channel == f.channel)
    for pid, won, closed in session.execute(win.group_by(c.pool_id)):
        rows[pid].won, rows[pid].closed = int(won or 0), int(closed)

    # Conflicts of the period first (few), then their customers by primary key: joining the other way
    # round walks a manager's whole book.
    recent = select(DuplicateConflict.customer_id).where(_period(DuplicateConflict.created_at, f))
    dup = select(c.pool_id, func.count()).where(c.id.in_(recent), c.pool_id.in_(list(rows) or [-1]))
    if f.channel is not None:
        dup = dup.where(c.channel == f.channel)
    if f.user_ids is not None:  # a manager: conflicts on customers their team holds
        dup = dup.where(c.owner_id.in_(sorted(f.user_ids)))
    for pid, n in session.execute(dup.group_by(c.pool_id)):
        rows[pid].conflicts = int(n)

    return {"rows": list(rows.values()), "weeks": list(weeks.values())}


def _pool_daily(session: Session, f: ReportFilter):
    """The daily pool rows of the period (rollup + live), narrowed to the filter's pool, channel, people."""
    src = rollup.source(session, f.start, f.end, f.tz, f.offset).subquery()
    query = select(src)
    if f.pool_id is not None:
        query = query.where(src.c.pool_id == f.pool_id)
    if f.channel is not None:
        query = query.where(src.c.channel == f.channel)
    if f.user_ids is not None:
        query = query.where(src.c.user_id.in_(sorted(f.user_ids)))
    return query.subquery()


def _empty_weeks(f: ReportFilter) -> dict[date, dict]:
    """The local weeks (Monday start) the period touches, with zero inflow and outflow."""
    weeks: dict[date, dict] = {}
    monday = f.start - timedelta(days=f.start.weekday())
    while monday <= f.end:
        weeks[monday] = {"week": monday, "inflow": 0, "outflow": 0}
        monday += timedelta(days=7)
    return weeks


def pools_table(data: dict) -> tuple[list[str], list[list]]:
    head = ["公海池", "流入", "流出", "当前池内", "周转率", "平均在池天数", "领取到首次联系(小时)",
            "跟进数", "人均跟进", "公海成交率", "撞单率"]  # fmt: skip
    rows = [
        [r.name, r.inflow, r.outflow, r.stock, _pct(r.turnover), _num(r.avg_days_in_pool),
         _num(r.claim_to_contact_hours), r.followups, _num(r.followups_per_rep), _pct(r.win_rate),
         _pct(r.conflict_rate)]
        for r in data["rows"]
    ]  # fmt: skip
    return head, rows


def pool_weeks_table(data: dict) -> tuple[list[str], list[list]]:
    return ["周(周一)", "流入", "流出"], [
        [w["week"].isoformat(), w["inflow"], w["outflow"]] for w in data["weeks"]
    ]


# ---- 5. channel conversion ----


def channels(session: Session, f: ReportFilter) -> dict:
    """Per intake channel: customers that arrived in the period and how many of them have won a deal."""
    label = func.coalesce(Customer.channel, literal(""))
    q = select(label, func.count(), func.sum(case((Customer.won_at.is_not(None), 1), else_=0))).where(
        _period(Customer.arrived_at, f), Customer.merged_into_id.is_(None)
    )
    if f.pool_id is not None:
        q = q.where(Customer.pool_id == f.pool_id)
    if f.channel is not None:
        q = q.where(Customer.channel == f.channel)
    if f.user_ids is not None:
        q = q.where(Customer.owner_id.in_(sorted(f.user_ids)))
    rows = [
        {"channel": ch or UNKNOWN_CHANNEL, "arrived": int(n), "won": int(won or 0), "rate": ratio(won, n)}
        for ch, n, won in session.execute(q.group_by(label).order_by(func.count().desc()))
    ]
    return {"rows": rows}


def channels_table(data: dict) -> tuple[list[str], list[list]]:
    return ["渠道", "新进客户", "已成交", "转化率"], [
        [r["channel"], r["arrived"], r["won"], _pct(r["rate"])] for r in data["rows"]
    ]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str | float:
    return "" if value is None else value


COMPUTE = {"funnel": funnel, "reps": reps, "heatmap": heatmap, "pools": pools, "channels": channels}
TABLES = {
    "funnel": funnel_table,
    "reps": reps_table,
    "heatmap": heatmap_table,
    "heatmap-reps": heatmap_reps_table,
    "pools": pools_table,
    "pool-weeks": pool_weeks_table,
    "channels": channels_table,
}
# Which panel computes each CSV table.
TABLE_PANEL = {"funnel": "funnel", "reps": "reps", "heatmap": "heatmap", "heatmap-reps": "heatmap",
               "pools": "pools", "pool-weeks": "pools", "channels": "channels"}  # fmt: skip
