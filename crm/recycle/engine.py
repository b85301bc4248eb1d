"""The one due-time definition (SPEC §3), used by the customer page, the sweep and the rule preview.

Each rule kind names an **anchor** fact of the customer and a length:

====================  ==============================================  =================================
kind                  anchor (the clock starts at)                    applies when
====================  ==============================================  =================================
no_followup           later of claim and last real follow-up          always
no_first_contact      claim                                           no first contact this holding
no_stage_progress     later of claim and last stage change            always
no_deal               claim                                           no deal won since the claim
nurture_expiry        the 长期培育 date (length 0)                     not followed up since it was set
====================  ==============================================  =================================

- due = anchor + length + approved extension days, counted in calendar or working days (``crm.clock``);
- while a customer is nurtured (长期培育) the other rules are paused: their anchor is at least the nurture date;
- protection (a deal won within ``protect_days``, or ``protected_until``) moves the due time to the end of the
  protection, for rules that exclude protected customers;
- an open opportunity at or past the rule's stage excludes the customer from that rule;
- the earliest due rule wins (ties: the rule listed first).

For sets of customers the definition runs in SQL: ``due ≤ T  ⟺  anchor ≤ cutoff(T)``, with the cutoff computed
in Python from the calendar (per distinct extension value, chosen with a ``CASE`` on ``extension_days``). For
one customer the same anchor expressions are selected and the due time is computed forward with the same
calendar functions; ``clock.add_working`` and ``clock.subtract_working`` are exact inverses, so both agree to
the microsecond. Times are UTC; days are counted in the team time zone (``CRM_TIMEZONE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import and_, case, func, literal, null, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, True_
from sqlalchemy.sql.functions import FunctionElement

from crm import clock
from crm.models import (
    Customer,
    ExtensionRequest,
    Opportunity,
    Pool,
    PoolEvent,
    RecycleRule,
    RuleKind,
    Stage,
)
from crm.models.types import UTCDateTime
from crm.recycle import split_scan
from crm.recycle.calendar import holiday_map
from crm.settings import store

C = Customer.__table__.c
DAY = timedelta(days=1)
NOT_DUE = 99  # bucket of a customer not due within the preview horizon
# A pool whose customer ids span at least this many has the preview's counting scan split into id ranges, one
# per core, each on its own connection (the databases release the GIL while they scan).
SPLIT_SCAN_MIN_SPAN = 200_000


# ---------------------------------------------------------------- rule data


@dataclass(frozen=True)
class RuleDef:
    """A rule as plain data: a saved ``RecycleRule`` or a candidate from the settings form (``id`` None)."""

    kind: str
    pool_id: int
    days: int | None = None
    hours: int | None = None
    day_kind: str = "calendar"
    grades: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    warn_days: int = 0
    escalate_days: int = 0
    target_pool_id: int | None = None
    exclude_protected: bool = True
    exclude_stage_id: int | None = None
    enabled: bool = True
    position: int = 0
    id: int | None = None

    @classmethod
    def from_model(cls, rule: RecycleRule) -> RuleDef:
        return cls(
            id=rule.id, kind=rule.kind, pool_id=rule.pool_id, days=rule.days, hours=rule.hours,
            day_kind=rule.day_kind or "calendar", grades=tuple(rule.grades or ()), kinds=tuple(rule.kinds or ()),
            warn_days=rule.warn_days or 0, escalate_days=rule.escalate_days or 0,
            target_pool_id=rule.target_pool_id, exclude_protected=bool(rule.exclude_protected),
            exclude_stage_id=rule.exclude_stage_id, enabled=bool(rule.enabled), position=rule.position or 0,
        )  # fmt: skip

    def as_dict(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "days": self.days, "hours": self.hours, "day_kind": self.day_kind,
            "grades": list(self.grades), "kinds": list(self.kinds), "warn_days": self.warn_days,
            "escalate_days": self.escalate_days, "target_pool_id": self.target_pool_id,
            "exclude_protected": self.exclude_protected, "exclude_stage_id": self.exclude_stage_id,
            "enabled": self.enabled, "position": self.position,
        }  # fmt: skip

    @property
    def working(self) -> bool:
        # Nurture expiry is a date the owner chose: counted on the calendar.
        return self.day_kind == "working" and self.kind != RuleKind.NURTURE_EXPIRY

    @property
    def length(self) -> timedelta:
        if self.kind == RuleKind.NURTURE_EXPIRY:
            return timedelta(0)
        if self.kind == RuleKind.NO_FIRST_CONTACT:
            return timedelta(hours=self.hours or 0) if self.hours else timedelta(days=self.days or 0)
        return timedelta(days=self.days or 0)

    @property
    def label(self) -> str:
        """ "7 天未跟进", "10 个工作日未跟进", "领取 48 小时未首次联系", "长期培育到期" …"""
        unit = _("个工作日") if self.working else _("天")
        if self.kind == RuleKind.NO_FOLLOWUP:
            return _("%(n)s %(unit)s未跟进", n=self.days, unit=unit)
        if self.kind == RuleKind.NO_FIRST_CONTACT:
            if self.hours:
                hours_unit = _("工作小时") if self.working else _("小时")
                return _("领取 %(n)s %(unit)s未首次联系", n=self.hours, unit=hours_unit)
            return _("领取 %(n)s %(unit)s未首次联系", n=self.days, unit=unit)
        if self.kind == RuleKind.NO_STAGE_PROGRESS:
            return _("%(n)s %(unit)s阶段无推进", n=self.days, unit=unit)
        if self.kind == RuleKind.NO_DEAL:
            return _("领取 %(n)s %(unit)s未成交", n=self.days, unit=unit)
        return _("长期培育到期")


# ---------------------------------------------------------------- evaluation context


@dataclass
class Context:
    """What evaluating rules needs besides the customers: the calendar, settings, excluded stages."""

    holidays: dict[date, bool]
    protect_days: int
    tz: str | None = None
    # stage id → ids of the stages at or past it (open opportunities there exclude the customer)
    stages_from: dict[int, list[int]] = field(default_factory=dict)
    # distinct approved extension values in use (always contains 0)
    ext_values: tuple[int, ...] = (0,)

    @classmethod
    def load(cls, session: Session, *, with_extensions: bool = True) -> Context:
        settings = store.get(session, "recycle")
        stages = session.execute(select(Stage.id, Stage.position)).all()
        stages_from = {sid: [other for other, p in stages if p >= pos] for sid, pos in stages}
        ext = (0,)
        if with_extensions:
            ext = tuple(sorted({0, *extension_values(session)}))
        return cls(
            holidays=holiday_map(session), protect_days=settings["protect_days"], tz=clock.default_tz_name(),
            stages_from=stages_from, ext_values=ext,
        )  # fmt: skip

    # The two directions of the calendar: exact inverses of each other.
    def shift(self, anchor: datetime, length: timedelta, working: bool) -> datetime:
        if working:
            return clock.add_working(anchor, length, self.holidays, self.tz)
        return anchor + length

    def cutoff(self, at: datetime, length: timedelta, working: bool) -> datetime:
        if working:
            return clock.subtract_working(at, length, self.holidays, self.tz)
        return at - length


def extension_values(session: Session) -> set[int]:
    """Distinct ``extension_days`` of current holdings with an approved extension (a small index lookup)."""
    rows = session.scalars(
        select(Customer.extension_days)
        .join(ExtensionRequest, ExtensionRequest.customer_id == Customer.id)
        .where(
            ExtensionRequest.status == "approved",
            ExtensionRequest.holding_no == Customer.holding_no,
            Customer.extension_days > 0,
        )
        .distinct()
    )
    return set(rows)


# ---------------------------------------------------------------- SQL pieces


class latest(FunctionElement):  # noqa: N801 - reads like the SQL function it compiles to
    """The latest of a non-NULL first timestamp and nullable others (NULLs ignored), each argument once in the
    SQL. (Nested ``CASE WHEN b > a THEN b ELSE a END`` repeat their inner expression at every use; this runs
    for every owned customer in the sweep and the preview.)"""

    type = UTCDateTime()
    inherit_cache = True


@compiles(latest)
def _latest_default(element, compiler, **kw):  # SQLite: multi-argument max() is NULL if any argument is
    first, *others = list(element.clauses)
    parts = [compiler.process(first, **kw)]
    parts += [f"coalesce({compiler.process(o, **kw)}, {parts[0]})" for o in others]
    return f"max({', '.join(parts)})"


@compiles(latest, "postgresql")
def _latest_pg(element, compiler, **kw):  # greatest() ignores NULLs
    return f"greatest({compiler.process(element.clauses, **kw)})"


def anchor_expr(rule: RuleDef) -> ColumnElement:
    """Where the rule's clock starts, as SQL over the ``customers`` table."""
    base = func.coalesce(C.claimed_at, C.created_at)
    if rule.kind == RuleKind.NURTURE_EXPIRY:
        return C.nurture_until
    # 长期培育 pauses the other rules: their clocks start again at the nurture date at the earliest.
    if rule.kind == RuleKind.NO_FOLLOWUP:
        return latest(base, C.last_followup_at, C.nurture_until)
    if rule.kind == RuleKind.NO_STAGE_PROGRESS:
        return latest(base, C.last_stage_change_at, C.nurture_until)
    return latest(base, C.nurture_until)  # no_first_contact, no_deal


def applies_expr(rule: RuleDef, ctx: Context, *, scoped: bool = False) -> ColumnElement:
    """Whether the rule applies to a customer at all (owner, home pool, narrowing, kind conditions).

    ``scoped``: the query already keeps only owned, unmerged customers of the rule's pool (the preview), so
    those conditions are left out rather than evaluated again for every row."""
    base = func.coalesce(C.claimed_at, C.created_at)
    conds = [] if scoped else [C.pool_id == rule.pool_id, C.owner_id.is_not(None), C.merged_into_id.is_(None)]
    if rule.grades:
        conds.append(C.grade.in_(list(rule.grades)))
    if rule.kinds:
        conds.append(C.kind.in_(list(rule.kinds)))
    if rule.kind == RuleKind.NO_FIRST_CONTACT:
        conds.append(C.first_contact_at.is_(None))
    elif rule.kind == RuleKind.NO_DEAL:
        conds.append(or_(C.won_at.is_(None), C.won_at < base))
    elif rule.kind == RuleKind.NURTURE_EXPIRY:
        conds.append(C.nurture_until.is_not(None))
        since = func.coalesce(C.nurture_set_at, base)
        conds.append(or_(C.last_followup_at.is_(None), C.last_followup_at <= since))
    stage_ids = ctx.stages_from.get(rule.exclude_stage_id or 0)
    if stage_ids:
        open_there = select(Opportunity.customer_id).where(
            Opportunity.status == "open", Opportunity.stage_id.in_(stage_ids)
        )
        conds.append(C.id.not_in(open_there))
    return and_(*conds) if conds else true()


def _dt(value: datetime) -> ColumnElement:
    return literal(value, UTCDateTime())


def cutoff_expr(
    rule: RuleDef,
    ctx: Context,
    at: datetime,
    lead: timedelta = timedelta(0),
    ext_col: ColumnElement | None = None,
) -> ColumnElement:
    """``anchor <= this`` ⟺ ``anchor + length + extension − lead`` has been reached at ``at``."""
    whens = {
        ext: _dt(ctx.cutoff(at, rule.length + ext * DAY - lead, rule.working))
        for ext in ctx.ext_values
        if rule.length + ext * DAY - lead >= timedelta(0) or not rule.working
    }
    return case(whens, value=C.extension_days if ext_col is None else ext_col, else_=null())


def unprotected_expr(ctx: Context, at: datetime, cols=C) -> ColumnElement:
    """Not protected at ``at``: no ``protected_until`` after it, no deal won within ``protect_days``."""
    won_since = at - timedelta(days=ctx.protect_days)
    return and_(
        or_(cols.protected_until.is_(None), cols.protected_until <= at),
        or_(cols.won_at.is_(None), cols.won_at <= won_since),
    )


def due_expr(rule: RuleDef, ctx: Context, at: datetime, lead: timedelta = timedelta(0)) -> ColumnElement:
    """The rule is due at ``at`` (or, with ``lead``, its due time minus ``lead`` has been reached)."""
    conds = [applies_expr(rule, ctx), anchor_expr(rule) <= cutoff_expr(rule, ctx, at, lead)]
    if rule.exclude_protected:
        conds.append(unprotected_expr(ctx, at))
    return and_(*conds)


# Set-based queries evaluate each rule's applicability and anchor once per row in an inner query (``OFFSET 0``
# keeps SQLite and PostgreSQL from inlining it, which would re-evaluate the expressions at every use) and
# compare the resulting columns against the cutoffs outside.


def evaluated(rules: list[RuleDef], ctx: Context, *columns, where=(), scoped: bool = False) -> object:
    """Subquery with ``ap<i>`` (rule i applies, 0/1) and ``a<i>`` (its anchor) for each rule, plus columns.
    ``scoped``: ``where`` keeps only owned, unmerged customers of the rules' one pool (see ``applies_expr``)."""
    cols = [C.id, C.extension_days, C.protected_until, C.won_at, *columns]
    for i, rule in enumerate(rules):
        cols += [
            flag(applies_expr(rule, ctx, scoped=scoped)).label(f"ap{i}"),
            anchor_expr(rule).label(f"a{i}"),
        ]
    return select(*cols).where(*where).offset(0).subquery("evaluated")


def due_on(
    ev, i: int, rule: RuleDef, ctx: Context, at: datetime, lead: timedelta = timedelta(0)
) -> ColumnElement:
    """``due_expr`` over an ``evaluated`` subquery's columns."""
    conds = [
        ev.c[f"ap{i}"] == 1,
        ev.c[f"a{i}"] <= cutoff_expr(rule, ctx, at, lead, ext_col=ev.c.extension_days),
    ]
    if rule.exclude_protected:
        conds.append(unprotected_expr(ctx, at, ev.c))
    return and_(*conds)


def anchor_le(rule: RuleDef, bound: datetime) -> ColumnElement:
    """A cheap, index-friendly necessary condition for ``anchor_expr(rule) <= bound`` on the raw columns
    (``latest(a, b) <= X`` ⟺ ``a <= X and (b is null or b <= X)``), used to skip most rows before the full
    expressions are evaluated."""
    x = _dt(bound)
    base = or_(C.claimed_at <= x, and_(C.claimed_at.is_(None), C.created_at <= x))
    if rule.kind == RuleKind.NURTURE_EXPIRY:
        return and_(C.pool_id == rule.pool_id, C.nurture_until <= x)
    conds = [C.pool_id == rule.pool_id, base, or_(C.nurture_until.is_(None), C.nurture_until <= x)]
    if rule.kind == RuleKind.NO_FOLLOWUP:
        conds.append(or_(C.last_followup_at.is_(None), C.last_followup_at <= x))
    elif rule.kind == RuleKind.NO_STAGE_PROGRESS:
        conds.append(or_(C.last_stage_change_at.is_(None), C.last_stage_change_at <= x))
    elif rule.kind == RuleKind.NO_FIRST_CONTACT:
        conds.append(C.first_contact_at.is_(None))
    return and_(*conds)


def prefilter(rules: list[RuleDef], ctx: Context, at: datetime, leads: list[timedelta] | None = None):
    """Rows that could be due (minus ``leads[i]``) at ``at`` under some rule: the loosest cutoff over the
    extension values in use."""
    terms = []
    for i, rule in enumerate(rules):
        lead = leads[i] if leads else timedelta(0)
        loosest = max(
            ctx.cutoff(at, rule.length + ext * DAY - lead, rule.working)
            for ext in ctx.ext_values
            if rule.length + ext * DAY - lead >= timedelta(0) or not rule.working
        )
        terms.append(anchor_le(rule, loosest))
    return or_(*terms)


def flag(condition: ColumnElement) -> ColumnElement:
    """A condition as 0/1 (never NULL), usable as a column and compared in an outer query."""
    if isinstance(condition, True_):
        return literal(1)
    return case((condition, 1), else_=0)


def epoch(expr: ColumnElement, dialect: str) -> ColumnElement:
    """Seconds since 1970 of a stored (naive UTC) timestamp."""
    if dialect == "postgresql":
        return func.extract("epoch", expr)
    return (func.julianday(expr) - 2440587.5) * 86400.0


def overdue_expr(rule: RuleDef, ctx: Context, at: datetime, dialect: str, anchor=None, ext_col=None):
    """How far past its cutoff the anchor is (larger = due earlier); ranks rules that are due together."""
    whens = {ext: ctx.cutoff(at, rule.length + ext * DAY, rule.working).timestamp() for ext in ctx.ext_values}
    ext_col = C.extension_days if ext_col is None else ext_col
    anchor = anchor_expr(rule) if anchor is None else anchor
    return case(whens, value=ext_col, else_=null()) - epoch(anchor, dialect)


def winner_expr(rules: list[RuleDef], due_cols: list, over_cols: list) -> ColumnElement:
    """The id of the most overdue rule among those due (ties: listed first). Inputs are 0/1 flags and scores
    of an inner query, so each rule's expression is evaluated once per row."""
    whens = []
    for i, rule in enumerate(rules):
        beats_later = [or_(due_cols[j] == 0, over_cols[i] >= over_cols[j]) for j in range(i + 1, len(rules))]
        whens.append((and_(due_cols[i] == 1, *beats_later), rule.id))
    return case(*whens, else_=null()) if whens else null()


def least(dialect: str, *exprs: ColumnElement) -> ColumnElement:
    if len(exprs) == 1:
        return exprs[0]
    return func.least(*exprs) if dialect == "postgresql" else func.min(*exprs)


def greatest(dialect: str, *exprs: ColumnElement) -> ColumnElement:
    if len(exprs) == 1:
        return exprs[0]
    return func.greatest(*exprs) if dialect == "postgresql" else func.max(*exprs)


def _search(value: ColumnElement, cutoffs: list, lo: int, hi: int) -> ColumnElement:
    """The first ``k`` in ``[lo, hi)`` with ``value <= cutoffs[k]`` (``NOT_DUE`` if none), as a balanced tree
    of comparisons: ~log2(9) comparisons per row instead of a chain of up to 9. ``cutoffs`` ascend."""
    if lo == hi:
        return literal(lo if lo < len(cutoffs) else NOT_DUE)
    mid = (lo + hi) // 2
    return case(
        (value <= _dt(cutoffs[mid]), _search(value, cutoffs, lo, mid)),
        else_=_search(value, cutoffs, mid + 1, hi),
    )


def bucket_on(
    ev, i: int, rule: RuleDef, ctx: Context, bounds: list[datetime], dialect: str, *, protection: bool = True
) -> ColumnElement:
    """Index of the first boundary by which rule ``i`` is due (``NOT_DUE`` if none): due ≤ bounds[k].

    ``bounds`` are [now, end of today, end of tomorrow, …]. "due ≤ bounds[k]" is ``anchor <= cutoff(bounds[k])``
    exactly as in ``due_expr`` (calendar and working days alike), so the cutoffs are computed here in Python
    and each row only does a few timestamp comparisons (no date arithmetic in SQL): this expression runs
    for every owned customer of the pool (1,000,000 in bench/sweep.py). ``protection=False`` leaves out the
    protection (``first_bucket`` applies it once for all rules).
    """
    anchor = ev.c[f"a{i}"]
    trees = {
        ext: _search(
            anchor, [ctx.cutoff(b, rule.length + ext * DAY, rule.working) for b in bounds], 0, len(bounds)
        )
        for ext in ctx.ext_values
    }
    if list(trees) == [0]:
        rule_bucket = case((ev.c.extension_days == 0, trees[0]), else_=NOT_DUE)
    else:
        rule_bucket = case(trees, value=ev.c.extension_days, else_=NOT_DUE)
    if rule.exclude_protected and protection:
        rule_bucket = greatest(dialect, rule_bucket, protection_bucket(ev, ctx, bounds))
    return case((ev.c[f"ap{i}"] == 1, rule_bucket), else_=NOT_DUE)


def first_bucket(
    ev, rules: list[RuleDef], ctx: Context, bounds: list[datetime], dialect: str
) -> ColumnElement:
    """The customer's earliest bucket over ``rules``: ``min_i max(bucket_i, protection)`` computed as
    ``max(min_i bucket_i, protection)`` over the rules that honour protection (max distributes over min), so
    the protection expression is evaluated once per row whatever the number of rules."""
    guarded = [
        bucket_on(ev, i, r, ctx, bounds, dialect, protection=False)
        for i, r in enumerate(rules)
        if r.exclude_protected
    ]
    free = [bucket_on(ev, i, r, ctx, bounds, dialect) for i, r in enumerate(rules) if not r.exclude_protected]
    if guarded:
        free.append(greatest(dialect, least(dialect, *guarded), protection_bucket(ev, ctx, bounds)))
    return least(dialect, *free)


def protection_bucket(ev, ctx: Context, bounds: list[datetime]) -> ColumnElement:
    """First boundary at which the customer is no longer protected (0 for the many never protected)."""
    free = case(*[(unprotected_expr(ctx, b, ev.c), k) for k, b in enumerate(bounds)], else_=NOT_DUE)
    return case((and_(ev.c.protected_until.is_(None), ev.c.won_at.is_(None)), 0), else_=free)


# ---------------------------------------------------------------- loading rules


def live_pool_ids(session: Session) -> set[int]:
    return set(session.scalars(select(Pool.id).where(Pool.deleted_at.is_(None))))


def active_rules(session: Session, pool_id: int | None = None) -> list[RuleDef]:
    """Enabled, not removed rules of live pools, in list order; a deleted target pool means "home pool"."""
    live = live_pool_ids(session)
    query = select(RecycleRule).where(RecycleRule.enabled.is_(True), RecycleRule.deleted_at.is_(None))
    if pool_id is not None:
        query = query.where(RecycleRule.pool_id == pool_id)
    rules = []
    for rule in session.scalars(query.order_by(RecycleRule.pool_id, RecycleRule.position, RecycleRule.id)):
        if rule.pool_id not in live:
            continue
        data = RuleDef.from_model(rule)
        if data.target_pool_id is not None and data.target_pool_id not in live:
            data = RuleDef(**{**data.__dict__, "target_pool_id": None})
        rules.append(data)
    return rules


def by_pool(rules: Iterable[RuleDef]) -> dict[int, list[RuleDef]]:
    grouped: dict[int, list[RuleDef]] = {}
    for rule in rules:
        grouped.setdefault(rule.pool_id, []).append(rule)
    return grouped


# ---------------------------------------------------------------- one customer


@dataclass
class RuleDue:
    """One rule's verdict for one customer."""

    rule: RuleDef
    anchor_at: datetime
    anchor_fact: str  # which fact started the clock, in words
    due_at: datetime  # when the rule recycles (after extensions and protection)
    warn_at: datetime | None
    escalate_at: datetime | None
    protected_until: datetime | None  # protection pushed the due time to here


@dataclass
class DueInfo:
    """The customer's next recycle: the winning rule, when, why, and what was already sent."""

    customer_id: int
    holding_no: int
    due: RuleDue | None
    rules: list[RuleDue]
    now: datetime
    extension_days: int = 0
    nurture_until: datetime | None = None
    protected_until: datetime | None = None
    warned: bool = False
    escalated: bool = False
    excluded: list[tuple[RuleDef, str]] = field(default_factory=list)

    @property
    def overdue(self) -> bool:
        return self.due is not None and self.due.due_at <= self.now

    @property
    def state(self) -> str:
        """ok / warned / escalated / overdue / none."""
        if self.due is None:
            return "none"
        if self.overdue:
            return "overdue"
        if self.escalated:
            return "escalated"
        if self.warned:
            return "warned"
        return "ok"

    def summary(self) -> str:
        """ "7 天未跟进 → 2026-03-14 10:00 回收, 预警已发" """
        if self.due is None:
            return _("当前没有会触发回收的规则")
        when = clock.local(self.due.due_at).strftime("%Y-%m-%d %H:%M")
        text = _("%(rule)s → %(when)s 回收", rule=self.due.rule.label, when=when)
        if self.escalated:
            text += _(", 预警已发, 已上报主管")
        elif self.warned:
            text += _(", 预警已发")
        return text

    def as_json(self) -> dict:
        due = self.due
        return {
            "due_at": due.due_at if due else None,
            "rule": ({"id": due.rule.id, "kind": due.rule.kind, "label": due.rule.label} if due else None),
            "anchor_at": due.anchor_at if due else None,
            "anchor": due.anchor_fact if due else None,
            "warn_at": due.warn_at if due else None,
            "escalate_at": due.escalate_at if due else None,
            "state": self.state,
            "warned": self.warned,
            "escalated": self.escalated,
            "summary": self.summary(),
            "extension_days": self.extension_days,
            "nurture_until": self.nurture_until,
            "protected_until": self.protected_until,
            "rules": [
                {"id": r.rule.id, "label": r.rule.label, "due_at": r.due_at, "anchor": r.anchor_fact}
                for r in self.rules
            ],
        }


def _anchor_fact(rule: RuleDef, anchor: datetime, row) -> str:
    if rule.kind == RuleKind.NURTURE_EXPIRY:
        return _("长期培育日期")
    if row.nurture_until is not None and anchor == row.nurture_until:
        return _("长期培育结束")
    if (
        rule.kind == RuleKind.NO_FOLLOWUP
        and row.last_followup_at is not None
        and anchor == row.last_followup_at
    ):
        return _("最后一次跟进")
    if (
        rule.kind == RuleKind.NO_STAGE_PROGRESS
        and row.last_stage_change_at is not None
        and anchor == row.last_stage_change_at
    ):
        return _("最后一次阶段变更")
    return _("领取")


def protection_end(
    ctx: Context, protected_until: datetime | None, won_at: datetime | None
) -> datetime | None:
    ends = [t for t in (protected_until, won_at + timedelta(days=ctx.protect_days) if won_at else None) if t]
    return max(ends) if ends else None


def due_info(session: Session, customer: Customer, now: datetime, ctx: Context | None = None) -> DueInfo:
    """The customer's next due time, its rule and why — the same definition the sweep runs in SQL."""
    info = DueInfo(
        customer_id=customer.id, holding_no=customer.holding_no, due=None, rules=[], now=now,
        extension_days=customer.extension_days or 0, nurture_until=customer.nurture_until,
    )  # fmt: skip
    if customer.owner_id is None or customer.pool_id is None:
        return info
    rules = active_rules(session, customer.pool_id)
    if not rules:
        return info
    ctx = ctx or Context.load(session, with_extensions=False)
    columns = [C.last_followup_at, C.last_stage_change_at, C.nurture_until, C.protected_until, C.won_at,
               C.extension_days]  # fmt: skip
    for i, rule in enumerate(rules):
        columns += [flag(applies_expr(rule, ctx)).label(f"a{i}"), anchor_expr(rule).label(f"t{i}")]
    row = session.execute(select(*columns).where(C.id == customer.id)).one()
    ext = timedelta(days=row.extension_days or 0)
    prot_end = protection_end(ctx, row.protected_until, row.won_at)
    info.protected_until = prot_end if prot_end and prot_end > now else None
    anchors = [UTCDateTime().process_result_value(getattr(row, f"t{i}"), None) for i in range(len(rules))]
    for i, rule in enumerate(rules):
        anchor = anchors[i]
        if not getattr(row, f"a{i}") or anchor is None:
            reason = _exclusion_reason(rule, row, ctx, customer)
            if reason:
                info.excluded.append((rule, reason))
            continue
        due_at = ctx.shift(anchor, rule.length + ext, rule.working)
        pushed = None
        if rule.exclude_protected and prot_end is not None and prot_end > due_at:
            pushed, due_at = prot_end, prot_end
        warn_at = (
            ctx.shift(anchor, rule.length + ext - rule.warn_days * DAY, rule.working)
            if rule.warn_days
            else None
        )
        esc_at = (
            ctx.shift(anchor, rule.length + ext - rule.escalate_days * DAY, rule.working)
            if rule.escalate_days
            else None
        )
        info.rules.append(
            RuleDue(rule, anchor, _anchor_fact(rule, anchor, row), due_at, warn_at, esc_at, pushed)
        )
    if info.rules:
        info.due = min(info.rules, key=lambda r: r.due_at)
        rid = info.due.rule.id
        keys = {
            f"warn:{customer.id}:{customer.holding_no}:{rid}": "warned",
            f"esc:{customer.id}:{customer.holding_no}:{rid}": "escalated",
        }
        for key in session.scalars(select(PoolEvent.dedupe_key).where(PoolEvent.dedupe_key.in_(list(keys)))):
            setattr(info, keys[key], True)
    return info


def _exclusion_reason(rule: RuleDef, row, ctx: Context, customer: Customer) -> str | None:
    """Why a rule of the pool does not apply (shown under the due time), or None if it is simply idle."""
    if rule.grades and customer.grade not in rule.grades:
        return _("仅适用于 %(g)s 级客户", g="/".join(rule.grades))
    if rule.kinds and customer.kind not in rule.kinds:
        return _("不适用于该客户类型")
    if rule.exclude_stage_id and ctx.stages_from.get(rule.exclude_stage_id):
        return _("有推进到指定阶段的商机时不适用")
    if rule.kind == RuleKind.NO_FIRST_CONTACT:
        return _("已首次联系")
    if rule.kind == RuleKind.NO_DEAL:
        return _("本次持有已成交")
    if rule.kind == RuleKind.NURTURE_EXPIRY and row.nurture_until is not None:
        return _("设置长期培育后已跟进")
    return None


# ---------------------------------------------------------------- preview (规则预演)


def day_bounds_ahead(now: datetime, days: int = 7, tz: str | None = None) -> list[datetime]:
    """[now, end of today, end of tomorrow, …] — the preview's bucket boundaries."""
    today = clock.local_today(tz, now)
    return [now] + [clock.day_bounds(today + timedelta(days=k), tz)[1] for k in range(days + 1)]


@dataclass
class Preview:
    """What a rule list would do now: warned now, recycled now / later today / each of the next 7 days."""

    now: datetime
    bounds: list[datetime]
    owned: int
    warned_now: int
    due_now: int
    per_day: list[tuple[date, int]]  # today (after now) and the next 7 days
    sample: list[dict]

    @property
    def today_total(self) -> int:
        return self.due_now + (self.per_day[0][1] if self.per_day else 0)

    @property
    def week_total(self) -> int:
        return self.due_now + sum(n for _d, n in self.per_day)

    def as_json(self) -> dict:
        return {
            "as_of": self.now,
            "owned": self.owned,
            "warned_now": self.warned_now,
            "recycle_now": self.due_now,
            "recycle_today": self.today_total,
            "days": [{"date": d.isoformat(), "count": n} for d, n in self.per_day],
            "sample": self.sample,
        }


def preview(
    session: Session, pool_id: int, rules: list[RuleDef], now: datetime, *, sample_size: int = 10
) -> Preview:
    """Run the due-time SQL for ``rules`` (saved or not) over the pool's owned customers; read-only.

    One scan computes each customer's bucket (the first day boundary by which its earliest rule is due) and
    whether it is in a warning window now; a window function keeps per-bucket counts and a small sample.
    """
    dialect = session.get_bind().dialect.name
    ctx = Context.load(session)
    rules = [r for r in rules if r.enabled and r.pool_id == pool_id]
    bounds = day_bounds_ahead(now, 7, ctx.tz)
    today = clock.local_today(ctx.tz, now)
    empty_days = [(today + timedelta(days=k), 0) for k in range(8)]
    where = (C.pool_id == pool_id, C.owner_id.is_not(None), C.merged_into_id.is_(None), C.locked_at.is_(None))
    if not rules:
        owned = session.scalar(select(func.count()).select_from(Customer).where(*where)) or 0
        return Preview(now, bounds, owned, 0, 0, empty_days, [])
    warn_leads = [r.warn_days * DAY if r.warn_days else None for r in rules]

    def per_rule_query(*extra, combined: bool = False, id_range: tuple[int, int] | None = None):
        scope = where if id_range is None else (*where, C.id.between(*id_range))
        ev = evaluated(rules, ctx, *extra, where=scope, scoped=True)
        # In the warning window now and not due now: due_on(now, lead) and not due_on(now), with the shared
        # conditions (applies, unprotected now) evaluated once.
        warn_terms = [
            and_(
                ev.c[f"ap{i}"] == 1,
                ev.c[f"a{i}"] <= cutoff_expr(r, ctx, now, lead, ext_col=ev.c.extension_days),
                ev.c[f"a{i}"] > cutoff_expr(r, ctx, now, ext_col=ev.c.extension_days),
                *([unprotected_expr(ctx, now, ev.c)] if r.exclude_protected else []),
            )
            for i, (r, lead) in enumerate(zip(rules, warn_leads, strict=True))
            if lead is not None
        ]
        return (
            select(
                *[ev.c[col.name] for col in extra],
                *(
                    [first_bucket(ev, rules, ctx, bounds, dialect).label("first")]
                    if combined
                    else [
                        bucket_on(ev, i, r, ctx, bounds, dialect).label(f"b{i}") for i, r in enumerate(rules)
                    ]
                ),
                (flag(or_(*warn_terms)) if warn_terms else literal(0)).label("warn"),
            )
            .offset(0)
            .subquery("per_rule")
        )

    # One pass for the counts: each customer's first bucket and warning flag computed once (an inner query),
    # then grouped — a handful of groups, no per-bucket conditional sums re-evaluating the minimum.
    def grouped(id_range=None):
        keyed = per_rule_query(combined=True, id_range=id_range)
        return select(keyed.c.first, keyed.c.warn, func.count()).group_by(keyed.c.first, keyed.c.warn)

    ranges = _scan_ranges(session, pool_id)
    if ranges:
        groups = split_scan.run_all(session.get_bind(), [grouped(r) for r in ranges])
    else:
        groups = session.execute(grouped()).all()
    owned, warned, counts = 0, 0, [0] * len(bounds)
    for bucket, warn, n in groups:
        owned += n
        if bucket < len(bounds):
            counts[bucket] += n
        # Warned now: in a warning window and not recycled right away (the sweep recycles first).
        if warn == 1 and bucket != 0:
            warned += n
    # A sample from the earliest non-empty buckets, in one query (never a scan per bucket): when the earliest
    # bucket alone fills the sample, an unordered scan that stops after ``sample_size`` rows; otherwise the
    # buckets up to the one that fills it, ordered (a top-N sort).
    sampled = per_rule_query(C.id, C.name, C.owner_id)
    buckets = [sampled.c[f"b{i}"] for i in range(len(rules))]
    first = least(dialect, *buckets)
    rule_of = case(*[(b == first, i) for i, b in enumerate(buckets)], else_=null())
    sample_rows: list = []
    nonempty = [k for k, n in enumerate(counts) if n]
    if nonempty and sample_size > 0:
        last, running = nonempty[-1], 0
        for k in nonempty:
            running += counts[k]
            if running >= sample_size:
                last = k
                break
        query = select(
            sampled.c.id, sampled.c.name, sampled.c.owner_id, first.label("bucket"), rule_of.label("pos")
        )
        if last == nonempty[0]:
            query = query.where(first == last)
        else:
            query = query.where(first <= last).order_by(first, sampled.c.id)
        sample_rows = list(session.execute(query.limit(sample_size)).all())
    owners = _user_names(session, {r.owner_id for r in sample_rows})
    sample = []
    for row in sample_rows:
        rule = rules[row.pos] if row.pos is not None else None
        sample.append(
            {
                "customer_id": row.id,
                "name": row.name,
                "owner": owners.get(row.owner_id, ""),
                "rule": rule.label if rule else "",
                "when": _("立即")
                if row.bucket == 0
                else (today + timedelta(days=row.bucket - 1)).isoformat(),
            }
        )
    per_day = [(today + timedelta(days=k), counts[k + 1]) for k in range(8)]
    return Preview(now, bounds, owned, warned, counts[0], per_day, sample)


def _scan_ranges(session: Session, pool_id: int) -> list[tuple[int, int]]:
    """Id ranges splitting a large pool's scan over the cores (each an index look-up to find), or [] for one
    statement: one core, a small pool, or an in-memory SQLite database that other connections cannot see."""
    workers = min(os.cpu_count() or 1, 4)
    bind = session.get_bind()
    if workers < 2 or (bind.dialect.name == "sqlite" and bind.url.database in (None, "", ":memory:")):
        return []
    low = session.scalar(select(func.min(C.id)).where(C.pool_id == pool_id))
    high = session.scalar(select(func.max(C.id)).where(C.pool_id == pool_id))
    if low is None or high - low + 1 < SPLIT_SCAN_MIN_SPAN:
        return []
    step = (high - low) // workers + 1
    return [(low + k * step, min(high, low + (k + 1) * step - 1)) for k in range(workers)]


def _user_names(session: Session, ids: set) -> dict[int, str]:
    from crm.models import User

    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(ids))).all())
