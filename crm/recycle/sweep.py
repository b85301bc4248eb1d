"""The recycle sweep (回收): ``sweep(session, now)`` recycles, warns and escalates for the whole database.

A handful of set-based statements, whatever the number of customers:

1. ``recycle_due_tmp`` ← one scan of ``customers``: every owned customer due at ``now`` under its home pool's
   rules (``engine.due_expr``), with the winning rule (the most overdue; ties: listed first);
2. one conditional ``UPDATE … FROM`` moves them (``WHERE owner_id = <old owner> AND holding_no = <holding>``),
   records the previous owner (``last_owner_id``/``last_released_at``: the pool's cooldown / priority
   window works from these at claim time) and, for fair-release pools, hides them until the next release;
3. one ``INSERT … SELECT`` writes the ledger rows (dedupe ``recycle:<customer>:<holding>``), one naming the
   rule per recycled customer; another tags customers recycled ``hard_threshold`` times within
   ``hard_window_days`` as 高难度 and makes them senior-only;
4. ``recycle_notice_tmp`` ← one scan: (customer, rule) pairs inside a warning window; from it, ledger rows
   ``warned``/``escalated`` (dedupe ``warn:<c>:<holding>:<rule>`` / ``esc:…``) and reminders for the owner and
   the owner's manager (unique keys ``recycle-warn:…`` / ``recycle-esc:…``), so each is sent once per holding
   and rule however often the sweep runs.

Safety: the work is one transaction (a crash or a kill leaves nothing half done; a rerun finishes it); it
takes the database write lock first on SQLite and a transaction-level advisory lock on PostgreSQL, so two
workers run one after the other and the second finds nothing left; dedupe keys and the conditional update
make double rows impossible even without the lock. It works from ``now``, never "since the last run", so a
worker that was down catches up on its next run. Each run is logged in ``sweep_runs`` (committed first, so
a killed run stays visible as "running").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from crm import clock, signals
from crm.dbutil import insert_ignore
from crm.models import (
    HARD_TAG,
    Customer,
    EventKind,
    Pool,
    PoolEvent,
    Reminder,
    ReminderKind,
    ReminderStatus,
    SweepRun,
    Tag,
    Team,
    User,
    customer_tags,
)
from crm.models.types import UTCDateTime
from crm.recycle import engine
from crm.recycle.engine import DAY, Context, RuleDef
from crm.settings import store

ADVISORY_LOCK_KEY = 731_905_001  # PostgreSQL: one sweep at a time (pg_advisory_xact_lock)

_tmp = MetaData()
DUE = Table(
    "recycle_due_tmp",
    _tmp,
    Column("customer_id", Integer, primary_key=True),
    Column("rule_id", Integer),
    Column("owner_id", Integer),
    Column("holding_no", Integer),
    Column("pool_id", Integer),
    Column("target_pool_id", Integer),  # NULL: back to the home pool
    Column("holding_followups", Integer),
    prefixes=["TEMPORARY"],
)
NOTICE = Table(
    "recycle_notice_tmp",
    _tmp,
    Column("customer_id", Integer, primary_key=True),
    Column("rule_id", Integer, primary_key=True),
    Column("escalate", Integer),
    prefixes=["TEMPORARY"],
)
C = Customer.__table__.c


@dataclass
class SweepResult:
    """What one sweep did (or, with ``dry_run``, would do)."""

    run_id: int | None
    as_of: datetime
    dry_run: bool = False
    recycled: int = 0
    warned: int = 0
    escalated: int = 0
    hard_tagged: int = 0
    duration_ms: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    customer_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        head = _("(演练,未保存) ") if self.dry_run else ""
        return head + _(
            "截至 %(at)s: 回收 %(r)s, 预警 %(w)s, 上报主管 %(e)s, 新增高难度 %(h)s, 用时 %(ms)s ms",
            at=clock.local(self.as_of).strftime("%Y-%m-%d %H:%M"), r=self.recycled, w=self.warned,
            e=self.escalated, h=self.hard_tagged, ms=self.duration_ms,
        )  # fmt: skip


def sweep(session: Session, now: datetime, *, dry_run: bool = False) -> SweepResult:
    """Recycle everything due at ``now``, send due warnings/escalations; log the run. Commits.

    ``dry_run`` runs the very same statements and rolls them back, so its counts are exact.
    """
    now = clock.as_utc(now)
    started = time.monotonic()
    run = SweepRun(started_at=clock.now(), as_of=now, dry_run=dry_run, status="running", details={})
    session.add(run)
    session.commit()
    run_id = run.id
    result = SweepResult(run_id=run_id, as_of=now, dry_run=dry_run)
    try:
        _work(session, now, run_id, result)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        values = _run_values(result, "ok")
        if dry_run:
            session.rollback()
        session.execute(update(SweepRun).where(SweepRun.id == run_id).values(**values))
        session.commit()
    except Exception as exc:
        session.rollback()
        session.execute(
            update(SweepRun)
            .where(SweepRun.id == run_id)
            .values(
                status="error",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                finished_at=clock.now(),
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )
        session.commit()
        raise
    return result


def _run_values(result: SweepResult, status: str) -> dict:
    return {
        "status": status,
        "finished_at": clock.now(),
        "duration_ms": result.duration_ms,
        "recycled": result.recycled,
        "warned": result.warned,
        "escalated": result.escalated,
        "details": {"by_rule": result.by_rule, "hard_tagged": result.hard_tagged},
    }


def _lock(session: Session, run_id: int) -> None:
    """Serialise sweeps: PostgreSQL advisory lock; on SQLite the first write takes the database lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        # The joins with the due set hash ~100k rows in a big sweep: keep them in memory (this transaction only).
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    session.execute(update(SweepRun).where(SweepRun.id == run_id).values(status="running"))
    # Holding the sweep lock, any other run still "running" is dead (killed, or its host went down): its
    # work was rolled back with its transaction.
    _mark_abandoned(session, session.execute(select(SweepRun.id).where(
        SweepRun.status == "running", SweepRun.id != run_id)).scalars().all())  # fmt: skip


# A run still "running" after this long is dead (the job's timeout is minutes): ``abandon_stale`` marks it.
STALE_AFTER = timedelta(minutes=30)
ABANDONED = "abandoned"


def _mark_abandoned(session: Session, run_ids: list[int]) -> int:
    if not run_ids:
        return 0
    return (
        session.execute(
            update(SweepRun)
            .where(SweepRun.id.in_(run_ids), SweepRun.status == "running")
            .values(status=ABANDONED, error=_("中断:运行未完成(进程被终止),其改动已回滚。"))
            .execution_options(synchronize_session=False)
        ).rowcount
        or 0
    )


def abandon_stale(session: Session, now: datetime) -> int:
    """The periodic check: runs "running" for longer than ``STALE_AFTER`` are marked abandoned. Commits."""
    stale = session.scalars(
        select(SweepRun.id).where(SweepRun.status == "running", SweepRun.started_at < now - STALE_AFTER)
    ).all()
    marked = _mark_abandoned(session, list(stale))
    session.commit()
    return marked


def _work(session: Session, now: datetime, run_id: int, result: SweepResult) -> None:
    _lock(session, run_id)
    ctx = Context.load(session)
    rules = engine.active_rules(session)
    if not rules:
        return
    conn = session.connection()
    for table in (DUE, NOTICE):
        table.create(conn, checkfirst=True)
        session.execute(delete(table))
    _recycle(session, ctx, rules, now, result)
    _notices(session, ctx, rules, now, result)
    for table in (DUE, NOTICE):
        table.drop(conn)


# ---------------------------------------------------------------- recycle


def _labels(rules: list[RuleDef], column, fmt=lambda r: r.label) -> case:
    return case({r.id: fmt(r) for r in rules}, value=column, else_=null())


def _text(template: str, **parts) -> object:
    """A translated message with ``%(name)s`` placeholders filled by SQL expressions (set-based)."""
    import re

    pieces = re.split(r"%\((\w+)\)s", template)
    expr = literal(pieces[0])
    for i in range(1, len(pieces), 2):
        expr = expr + cast(parts[pieces[i]], String) + literal(pieces[i + 1])
    return func.substr(expr, 1, 200)


def _release_times(session: Session, now: datetime) -> dict[int, datetime]:
    """Fair-release pools → the next release instant after ``now`` (recycled customers hidden until then)."""
    out = {}
    tz = clock.default_tz_name()
    today = clock.local_today(tz, now)
    for pool in session.scalars(select(Pool).where(Pool.fair_release.is_(True), Pool.deleted_at.is_(None))):
        candidates = []
        for raw in pool.release_times or []:
            try:
                hour, minute = (int(x) for x in str(raw).split(":"))
            except ValueError:
                continue
            for offset in (0, 1):
                at = clock.at_local(today + timedelta(days=offset), hour, minute, tz)
                if at > now:
                    candidates.append(at)
        if candidates:
            out[pool.id] = min(candidates)
    return out


def _recycle(
    session: Session, ctx: Context, rules: list[RuleDef], now: datetime, result: SweepResult
) -> None:
    dialect = session.get_bind().dialect.name
    pools = engine.by_pool(rules)
    ev = engine.evaluated(
        rules, ctx, C.owner_id, C.holding_no, C.pool_id, C.holding_followups,
        where=(C.owner_id.is_not(None), C.locked_at.is_(None), engine.prefilter(rules, ctx, now)),
    )  # fmt: skip
    flags = [engine.flag(engine.due_on(ev, i, rule, ctx, now)).label(f"d{i}") for i, rule in enumerate(rules)]
    inner = (
        select(
            ev.c.id,
            ev.c.owner_id,
            ev.c.holding_no,
            ev.c.pool_id,
            ev.c.holding_followups,
            ev.c.extension_days,
            *[ev.c[f"a{i}"] for i in range(len(rules))],
            *flags,
        )  # fmt: skip
        .offset(0)
        .subquery("rules_eval")
    )
    # Rank scores only matter (and are only computed) for the rows that are due.
    scores = [
        engine.overdue_expr(rule, ctx, now, dialect, inner.c[f"a{i}"], inner.c.extension_days)
        for i, rule in enumerate(rules)
    ]
    index = {id(r): i for i, r in enumerate(rules)}
    winner = case(
        *[
            (
                inner.c.pool_id == pool_id,
                engine.winner_expr(
                    pool_rules,
                    [inner.c[f"d{index[id(r)]}"] for r in pool_rules],
                    [scores[index[id(r)]] for r in pool_rules],
                ),
            )
            for pool_id, pool_rules in pools.items()
        ],
        else_=null(),
    )
    due_rows = select(
        inner.c.id, winner, inner.c.owner_id, inner.c.holding_no, inner.c.pool_id, inner.c.holding_followups
    ).where(or_(*[inner.c[f"d{i}"] == 1 for i in range(len(rules))]))
    session.execute(
        insert(DUE).from_select(
            ["customer_id", "rule_id", "owner_id", "holding_no", "pool_id", "holding_followups"], due_rows
        )
    )
    targets = {r.id: r.target_pool_id for r in rules if r.target_pool_id}
    if targets:  # only rules with another target pool need this (a small statement on the temp table)
        session.execute(
            update(DUE)
            .where(DUE.c.rule_id.in_(list(targets)))
            .values(target_pool_id=case(targets, value=DUE.c.rule_id, else_=null()))
        )
    total = session.scalar(select(func.count()).select_from(DUE)) or 0
    if not total:
        return

    target = func.coalesce(DUE.c.target_pool_id, DUE.c.pool_id)
    release = _release_times(session, now)
    visible = (
        case(
            {p: literal(at, UTCDateTime()) for p, at in release.items()},
            value=target,
            else_=null(),
        )
        if release
        else null()
    )
    moved = session.execute(
        update(Customer.__table__)
        .where(C.id == DUE.c.customer_id, C.owner_id == DUE.c.owner_id, C.holding_no == DUE.c.holding_no)
        .values(
            owner_id=None,
            pool_id=target,
            last_owner_id=DUE.c.owner_id,
            last_released_at=now,
            pool_entered_at=now,
            extension_days=0,
            nurture_until=None,
            nurture_set_at=None,
            locked_at=None,
            locked_by_id=None,
            visible_from=visible,
            updated_at=now,
        )  # fmt: skip
    ).rowcount
    if moved != total:
        # PostgreSQL only (SQLite holds the write lock): someone changed an owner between the scan and the
        # update. Keep just the rows this sweep moved.
        session.execute(
            delete(DUE).where(
                ~exists().where(
                    C.id == DUE.c.customer_id,
                    C.owner_id.is_(None),
                    C.last_owner_id == DUE.c.owner_id,
                    C.last_released_at == now,
                )  # fmt: skip
            )
        )
    ledger = select(
        DUE.c.customer_id, literal(EventKind.RECYCLED), literal(now, UTCDateTime()),
        _labels(rules, DUE.c.rule_id, lambda r: f"rule:{r.id} {r.label}"), DUE.c.rule_id, DUE.c.owner_id,
        DUE.c.pool_id, case((DUE.c.target_pool_id != DUE.c.pool_id, DUE.c.target_pool_id), else_=null()),
        _labels(rules, DUE.c.rule_id), DUE.c.holding_followups, DUE.c.holding_no, literal(_("已回收")),
        literal("recycle:") + cast(DUE.c.customer_id, String) + literal(":") + cast(DUE.c.holding_no, String),
    )  # fmt: skip
    result.recycled = insert_select(
        session, PoolEvent.__table__, ["dedupe_key"],
        ["customer_id", "kind", "at", "actor_system", "rule_id", "from_user_id", "pool_id", "to_pool_id",
         "reason", "holding_followups", "holding_no", "result", "dedupe_key"],
        ledger,
    )  # fmt: skip
    _tell_previous_owners(session, rules, now)
    labels = {r.id: r.label for r in rules}
    for rule_id, count in session.execute(select(DUE.c.rule_id, func.count()).group_by(DUE.c.rule_id)):
        label = labels.get(rule_id, str(rule_id))
        result.by_rule[label] = result.by_rule.get(label, 0) + count  # two rules may share a label
    _tag_hard(session, now, result)
    # Warnings about customers that are gone are moot.
    session.execute(
        update(Reminder)
        .where(
            Reminder.customer_id.in_(select(DUE.c.customer_id)),
            Reminder.status == ReminderStatus.OPEN,
            Reminder.kind.in_([ReminderKind.RECYCLE_WARNING, ReminderKind.RECYCLE_ESCALATION]),
        )
        .values(status=ReminderStatus.CANCELLED, done_at=now)
        .execution_options(synchronize_session=False)
    )
    result.customer_ids = list(session.scalars(select(DUE.c.customer_id).order_by(DUE.c.customer_id)))
    signals.ownership_changed.send(
        "recycle",
        session=session,
        customer_ids=result.customer_ids,
        now=now,
        id_query=select(DUE.c.customer_id),
    )


def _tell_previous_owners(session: Session, rules: list[RuleDef], now: datetime) -> int:
    """The previous owner hears that each customer was recycled away and by which rule: one reminder per
    customer and holding (unique key ``recycled:<customer>:<holding>``), set-based, delivered through the
    owner's channels like every reminder."""
    at = literal(now, UTCDateTime())
    key = (
        literal("recycled:") + cast(DUE.c.customer_id, String) + literal(":") + cast(DUE.c.holding_no, String)
    )
    return insert_select(
        session,
        Reminder.__table__,
        ["unique_key"],
        ["user_id", "customer_id", "kind", "title", "body", "due_at", "status", "unique_key", "created_at"],
        select(
            DUE.c.owner_id,
            DUE.c.customer_id,
            literal(ReminderKind.RECYCLED),
            _text(_("「%(customer)s」已被回收到公海"), customer=C.name),
            _text(_("原因: %(rule)s"), rule=_labels(rules, DUE.c.rule_id)),
            at,
            literal(ReminderStatus.OPEN),
            key,
            at,
        ).select_from(DUE.join(Customer.__table__, C.id == DUE.c.customer_id)),
    )


def insert_select(session: Session, table, conflict: list[str], columns: list[str], query) -> int:
    """``INSERT … SELECT … ON CONFLICT DO NOTHING``; returns how many rows were new. (SQLite needs a WHERE
    in the SELECT, or it reads ``ON CONFLICT`` as a join constraint.)"""
    return session.execute(
        insert_ignore(session, table, conflict)
        .from_select(columns, query.where(true()))
        .execution_options(preserve_rowcount=True)
    ).rowcount


def hard_tag_id(session: Session) -> int:
    """The id of the 高难度 system tag (created when missing)."""
    session.execute(
        insert_ignore(session, Tag.__table__, ["name"]).values(name=HARD_TAG, system=True, color="danger")
    )
    return session.scalar(select(Tag.id).where(Tag.name == HARD_TAG))


def _tag_hard(session: Session, now: datetime, result: SweepResult) -> None:
    """高难度: recycled ``hard_threshold`` times within ``hard_window_days`` → tagged and senior-only."""
    settings = store.get(session, "recycle")
    since = now - timedelta(days=settings["hard_window_days"])
    bounced = (
        select(PoolEvent.customer_id)
        .where(
            PoolEvent.kind == EventKind.RECYCLED,
            PoolEvent.at > since,
            PoolEvent.at <= now,
            PoolEvent.customer_id.in_(select(DUE.c.customer_id)),
        )
        .group_by(PoolEvent.customer_id)
        .having(func.count() >= settings["hard_threshold"])
    )
    tag_id = hard_tag_id(session)
    result.hard_tagged = insert_select(
        session,
        customer_tags,
        ["customer_id", "tag_id"],
        ["customer_id", "tag_id"],
        select(bounced.subquery().c.customer_id, literal(tag_id)),
    )
    session.execute(
        update(Customer.__table__).where(C.id.in_(bounced), C.senior_only.is_(False)).values(senior_only=True)
    )


# ---------------------------------------------------------------- warnings and escalation


def _notices(
    session: Session, ctx: Context, rules: list[RuleDef], now: datetime, result: SweepResult
) -> None:
    warned_rules = [r for r in rules if r.warn_days > 0 or r.escalate_days > 0]
    if not warned_rules:
        return
    leads = [max(r.warn_days, r.escalate_days) * DAY for r in warned_rules]
    ev = engine.evaluated(
        warned_rules,
        ctx,
        where=(
            C.owner_id.is_not(None),
            C.locked_at.is_(None),
            engine.prefilter(warned_rules, ctx, now, leads),
        ),
    )
    columns, any_window = [], []
    for i, rule in enumerate(warned_rules):
        lead = max(rule.warn_days, rule.escalate_days) * DAY
        window = engine.due_on(ev, i, rule, ctx, now, lead)
        esc = engine.due_on(ev, i, rule, ctx, now, rule.escalate_days * DAY) if rule.escalate_days else None
        columns += [
            engine.flag(window).label(f"w{i}"),
            (engine.flag(esc) if esc is not None else literal(0)).label(f"e{i}"),
        ]
        any_window.append(window)
    flagged = select(ev.c.id, *columns).offset(0).subquery("notice_flags")
    cand = (
        select(flagged)
        .where(or_(*[flagged.c[f"w{i}"] == 1 for i in range(len(warned_rules))]))
        .cte("notice_cand")
        .prefix_with("MATERIALIZED")
    )
    rule_ids = union_all(*[select(literal(r.id).label("rid")) for r in warned_rules]).subquery("notice_rules")
    in_window = case({r.id: cand.c[f"w{i}"] for i, r in enumerate(warned_rules)}, value=rule_ids.c.rid)
    escalate = case({r.id: cand.c[f"e{i}"] for i, r in enumerate(warned_rules)}, value=rule_ids.c.rid)
    pairs = select(cand.c.id, rule_ids.c.rid, escalate).select_from(cand.join(rule_ids, in_window == 1))
    session.execute(insert(NOTICE).from_select(["customer_id", "rule_id", "escalate"], pairs))

    owner = Customer.__table__.alias("owner_c")
    key_tail = literal(":") + cast(owner.c.holding_no, String) + literal(":") + cast(NOTICE.c.rule_id, String)
    cid = cast(NOTICE.c.customer_id, String)
    rule_label = _labels(warned_rules, NOTICE.c.rule_id)
    actor = _labels(warned_rules, NOTICE.c.rule_id, lambda r: f"rule:{r.id} {r.label}")
    warn_days = _labels(warned_rules, NOTICE.c.rule_id, lambda r: str(r.warn_days))
    joined = NOTICE.join(owner, owner.c.id == NOTICE.c.customer_id)
    at = literal(now, UTCDateTime())
    ledger_cols = ["customer_id", "kind", "at", "actor_system", "rule_id", "to_user_id", "pool_id", "reason",
                   "holding_no", "dedupe_key"]  # fmt: skip
    reminder_cols = ["user_id", "customer_id", "kind", "title", "body", "due_at", "status", "unique_key",
                     "created_at"]  # fmt: skip

    # Warnings to the owner (warn_days before due); rules with only an escalation warn at escalation time.
    warn_where = NOTICE.c.rule_id.in_([r.id for r in warned_rules])
    result.warned = insert_select(
        session, PoolEvent.__table__, ["dedupe_key"], ledger_cols,
        select(
            NOTICE.c.customer_id, literal(EventKind.WARNED), at, actor, NOTICE.c.rule_id, owner.c.owner_id,
            owner.c.pool_id, rule_label, owner.c.holding_no, literal("warn:") + cid + key_tail,
        ).select_from(joined).where(warn_where),
    )  # fmt: skip
    insert_select(
        session,
        Reminder.__table__,
        ["unique_key"],
        reminder_cols,
        select(
            owner.c.owner_id,
            NOTICE.c.customer_id,
            literal(ReminderKind.RECYCLE_WARNING),
            _text(_("「%(customer)s」%(rule)s,即将回收"), customer=owner.c.name, rule=rule_label),
            _text(
                _("约 %(days)s 天后回收到公海。跟进一次即可重新计时,也可以申请延期。"),
                days=warn_days,
            ),
            at,
            literal(ReminderStatus.OPEN),
            literal("recycle-warn:") + cid + key_tail,
            at,
        )
        .select_from(joined)
        .where(warn_where),  # fmt: skip
    )

    # Escalations to the owner's manager: the explicit manager, else the team's manager (never themself).
    user = User.__table__.alias("owner_u")
    team = Team.__table__.alias("owner_team")
    manager = case(
        (and_(user.c.manager_id.is_not(None), user.c.manager_id != user.c.id), user.c.manager_id),
        (and_(team.c.manager_id.is_not(None), team.c.manager_id != user.c.id), team.c.manager_id),
        else_=null(),
    )
    esc_base = (
        select(
            NOTICE.c.customer_id,
            NOTICE.c.rule_id,
            manager.label("manager_id"),
            owner.c.owner_id,
            owner.c.pool_id,
            owner.c.holding_no,
            owner.c.name,
            user.c.name.label("owner_name"),
        )  # fmt: skip
        .select_from(
            joined.join(user, user.c.id == owner.c.owner_id).outerjoin(team, team.c.id == user.c.team_id)
        )
        .where(NOTICE.c.escalate == 1)
        .subquery("esc")
    )
    e = esc_base.c
    esc_tail = literal(":") + cast(e.holding_no, String) + literal(":") + cast(e.rule_id, String)
    esc_label = _labels(warned_rules, e.rule_id)
    result.escalated = insert_select(
        session,
        PoolEvent.__table__,
        ["dedupe_key"],
        ledger_cols + ["from_user_id"],
        select(
            e.customer_id,
            literal(EventKind.ESCALATED),
            at,
            _labels(warned_rules, e.rule_id, lambda r: f"rule:{r.id} {r.label}"),
            e.rule_id,
            e.manager_id,
            e.pool_id,
            esc_label,
            e.holding_no,
            literal("esc:") + cast(e.customer_id, String) + esc_tail,
            e.owner_id,
        ).where(e.manager_id.is_not(None)),  # fmt: skip
    )
    insert_select(
        session,
        Reminder.__table__,
        ["unique_key"],
        reminder_cols,
        select(
            e.manager_id,
            e.customer_id,
            literal(ReminderKind.RECYCLE_ESCALATION),
            _text(
                _("「%(customer)s」(%(owner)s) %(rule)s,即将回收"),
                customer=e.name,
                owner=e.owner_name,
                rule=esc_label,
            ),
            _text(
                _("负责人收到预警后仍未跟进,约 %(days)s 天后回收到公海。"),
                days=_labels(warned_rules, e.rule_id, lambda r: str(r.escalate_days)),
            ),
            at,
            literal(ReminderStatus.OPEN),
            literal("recycle-esc:") + cast(e.customer_id, String) + esc_tail,
            at,
        ).where(e.manager_id.is_not(None)),  # fmt: skip
    )


def last_runs(session: Session, limit: int = 50) -> list[SweepRun]:
    return list(session.scalars(select(SweepRun).order_by(SweepRun.id.desc()).limit(limit)))
