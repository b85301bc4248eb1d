"""The pool rules (SPEC §2): claim (领取), release (退回公海), assign / transfer (分配/转移), departures,
and the ledger. Web routes, the JSON API, jobs and tests all call these functions.

Race safety: every ownership change is a conditional ``UPDATE … WHERE owner_id IS NULL`` (or on rows
locked with ``SELECT … FOR UPDATE``) with a rowcount check. A user's claims are serialised by bumping
``users.claim_seq`` first, which takes a row lock on PostgreSQL and the write lock on SQLite, so the daily
limit and holding cap hold under load. Functions that change ownership commit (or roll back) themselves:
the change is atomic with its ledger rows.

Decisions where the SPEC is silent:
- A release needs a reason from the configured list and a handoff note of at least 5 characters.
- A pool with fair release (定时释放) hides released customers until its next release time, like
  recycled ones, so a friend cannot be handed a customer by releasing it at the right moment.
- Assigning to a user on leave (``away_until`` in the future) is refused like assigning to an inactive one.
- A rep who is a pool admin assigns to the pool's members but never to themselves (they claim, so the
  daily limit applies). Senior-only (高难度) customers go only to senior levels, by claim or assignment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import Boolean, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, scoped_session

from crm import clock, permissions, signals
from crm.dbutil import is_postgres, prebuilt
from crm.models import (
    ClaimCount,
    Customer,
    EventKind,
    Pool,
    PoolEvent,
    PrevOwnerRule,
    ReminderKind,
    Role,
    User,
)
from crm.notify import notify
from crm.ops.metrics import claim_outcome
from crm.permissions import (
    can_receive_from,
    is_pool_admin,
    manages,
    pool_role_exprs,
    roles_from,
    team_member_ids,
)
from crm.settings import store

DEFAULT_RELEASE_REASONS = [
    "客户暂无需求",
    "联系不上",
    "预算不足",
    "已选择竞品",
    "非目标客户",
    "信息有误",
    "其他",
]
NOTE_MIN_CHARS = 2  # any non-blank note of two characters or more (电话空号)
NOTE_MAX_CHARS = 1000
# One request may assign at most this many customers (departures move everything, without this limit).
MAX_BULK = 500


def _validate_pool_settings(data: dict) -> dict:
    reasons = [str(r).strip() for r in data.get("release_reasons") or [] if str(r).strip()]
    if not reasons:
        raise store.SettingsError({"release_reasons": _("至少保留一个退回原因。")})
    if any(len(r) > 60 for r in reasons):
        raise store.SettingsError({"release_reasons": _("每个退回原因不超过 60 字。")})
    default_cap = data.get("default_holding_cap")
    if not isinstance(default_cap, int) or isinstance(default_cap, bool) or not 1 <= default_cap <= 10000:
        raise store.SettingsError({"default_holding_cap": _("保有量需在 1–10000 之间。")})
    won = data.get("won_count_toward_cap", True)
    if not isinstance(won, bool):
        raise store.SettingsError({"won_count_toward_cap": _("请选择是或否。")})
    return {
        "release_reasons": list(dict.fromkeys(reasons)),
        "default_holding_cap": default_cap,
        "won_count_toward_cap": won,
    }


store.register(
    "pool",
    "公海规则",
    # won_count_toward_cap: whether won customers (成交客户, a deal signed: ``won_at`` set) count against the
    # holding cap (悟空CRM / Cordys let teams exclude them).
    {"release_reasons": DEFAULT_RELEASE_REASONS, "default_holding_cap": 20, "won_count_toward_cap": True},
    _validate_pool_settings,
)


def won_count_toward_cap(session: Session) -> bool:
    """Settings → 公海规则: do won customers count against the holding cap? (Read on every claim: kept per
    process, dropped when this process writes a setting.)"""
    from crm.intake.txcache import process_memo

    return process_memo(
        session, "won_count_toward_cap", lambda: store.get(session, "pool")["won_count_toward_cap"]
    )


def held_filter(count_won) -> object:
    """The customers that count as held against the cap: not merged away and — unless won customers
    count (``count_won``: a bool or a bind parameter) — not won."""
    return and_(Customer.merged_into_id.is_(None), or_(count_won, Customer.won_at.is_(None)))


class PoolRefusal(Exception):
    """A refused pool action with a message for the user and a stable code for the API.

    Codes and HTTP statuses (documented in the README / OpenAPI):
    taken 409, not_owner 409, merged 409, not_found 404, forbidden 403, not_member 403, senior_only 403,
    daily_limit 429, holding_cap 422, cooldown 422, priority_window 422, not_released 422, embargo 422,
    pool_disabled 422, inactive_user 422, user_away 422, invalid 422.
    """

    STATUS = {
        "taken": 409,
        "not_owner": 409,
        "not_found": 404,
        "merged": 409,
        "forbidden": 403,
        "not_member": 403,
        "senior_only": 403,
        "daily_limit": 429,
        "holding_cap": 422,
        "cooldown": 422,
        "priority_window": 422,
        "not_released": 422,
        "embargo": 422,
        "lock_quota": 422,
        "pool_disabled": 422,
        "invalid": 422,
        "inactive_user": 422,
        "user_away": 422,
    }

    def __init__(self, code: str, message: str, **detail):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 422)


# ---------------------------------------------------------------- ledger


def record_event(
    session: Session,
    customer: Customer | int,
    kind: str,
    at: datetime,
    *,
    actor: User | None = None,
    actor_system: str | None = None,
    **fields,
) -> PoolEvent:
    """Append one ledger row (流转记录). The only writer of single ``PoolEvent`` rows from the ORM."""
    check_event_kind(kind)
    customer_id = customer if isinstance(customer, int) else customer.id
    event = PoolEvent(
        customer_id=customer_id,
        kind=kind,
        at=at,
        actor_id=actor.id if actor else None,
        actor_system=actor_system if actor is None else None,
        **fields,
    )
    session.add(event)
    return event


EVENT_FIELDS = (
    "customer_id", "kind", "at", "actor_id", "actor_system", "rule_id", "from_user_id", "to_user_id",
    "pool_id", "to_pool_id", "reason", "note", "holding_followups", "result", "holding_no", "data",
    "dedupe_key",
)  # fmt: skip


def check_event_kind(kind: str) -> None:
    if kind not in EventKind.ALL:
        raise ValueError(f"unknown ledger kind {kind!r}")


def record_events(session: Session, rows: list[dict]) -> None:
    """Append many ledger rows in one statement (bulk moves)."""
    if not rows:
        return
    for row in rows:
        check_event_kind(row["kind"])
    session.execute(_EVENT_INSERT, [{k: row.get(k) for k in EVENT_FIELDS} for row in rows])


# Core, not the ORM's bulk insert: nobody reads the rows back here, and claims write one per request.
_EVENT_INSERT = insert(PoolEvent.__table__)


def announce_ownership_change(session: Session, customer_ids: list[int], now: datetime) -> None:
    if customer_ids:
        signals.ownership_changed.send("pool", session=session, customer_ids=customer_ids, now=now)


# ---------------------------------------------------------------- limits


def holding_cap_default(session: Session) -> int:
    """The cap of users without a level (settings → 公海规则)."""
    return store.get(session, "pool")["default_holding_cap"]


def holding_cap(session: Session, user: User) -> int:
    """The user's holding cap (保有量): from their level, else the default in settings."""
    if user.level is not None:
        return user.level.holding_cap
    return holding_cap_default(session)


def held_count(session: Session, user_id: int) -> int:
    """Customers the user holds now (merged-away duplicates do not count)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(Customer.owner_id == user_id, held_filter(won_count_toward_cap(session)))
        )
        or 0
    )


def team_tz(user: User) -> str | None:
    return user.team.timezone if user.team is not None and user.team.timezone else None


def claims_today(session: Session, user: User, pool_id: int, now: datetime) -> int:
    """Claims ``user`` made from the pool on their team's local day (releases do not refund them)."""
    day = clock.local_today(team_tz(user), now)
    return (
        session.scalar(
            select(ClaimCount.count).where(
                ClaimCount.user_id == user.id, ClaimCount.pool_id == pool_id, ClaimCount.day == day
            )
        )
        or 0
    )


def claims_today_by_pool(session: Session, user: User, now: datetime) -> dict[int, int]:
    day = clock.local_today(team_tz(user), now)
    return dict(
        session.execute(
            select(ClaimCount.pool_id, ClaimCount.count).where(
                ClaimCount.user_id == user.id, ClaimCount.day == day
            )
        ).all()
    )


@dataclass
class UserLoad:
    """What a rep holds against their cap, their seniority and time zone, and today's claims from a pool."""

    held: int
    cap: int
    claims_today: int
    senior: bool = False
    timezone: str | None = None


def _user_load_columns(uid, level_id, team_id) -> tuple:
    """Held count, level cap and seniority, team time zone as scalar subqueries (values or bind
    parameters), to be selected alone or with other columns in one round trip."""
    from crm.models import Level, Team

    held = (
        select(func.count())
        .select_from(Customer)
        .where(Customer.owner_id == uid, held_filter(bindparam("count_won", type_=Boolean)))
        .scalar_subquery()
    )
    cap = select(Level.holding_cap).where(Level.id == level_id).scalar_subquery()
    senior = select(Level.is_senior).where(Level.id == level_id).scalar_subquery()
    tz = select(Team.timezone).where(Team.id == team_id).scalar_subquery()
    return held, cap, senior, tz


def _user_load_statement(_dialect: str):
    uid = bindparam("uid")
    claims = select(ClaimCount.count).where(
        ClaimCount.user_id == uid,
        ClaimCount.pool_id == bindparam("pool_id"),
        ClaimCount.day == bindparam("day"),
    )
    return select(
        *_user_load_columns(uid, bindparam("level_id"), bindparam("team_id")), claims.scalar_subquery()
    )


_USER_LOAD = prebuilt(_user_load_statement)


def _load_of(session: Session, n_held, cap, senior, timezone, claimed: int = 0) -> UserLoad:
    if cap is None:
        cap = holding_cap_default(session)
    return UserLoad(held=n_held or 0, cap=cap, claims_today=claimed, senior=bool(senior), timezone=timezone)


def user_load(session: Session, user: User, pool_id: int | None, now: datetime) -> UserLoad:
    """Held / cap / seniority / team time zone and today's claims from ``pool_id``, in one query (the
    counters on every board page). Today is taken in the default zone; for a team with a zone of its
    own where that is another day, the claims are read again for the team's day."""
    day = clock.local_today(None, now)
    params = {
        "uid": user.id,
        "level_id": user.level_id,
        "team_id": user.team_id,
        "pool_id": pool_id,
        "day": day,
        "count_won": won_count_toward_cap(session),
    }
    n_held, cap, senior, timezone, claimed = session.execute(_USER_LOAD(session), params).one()
    if pool_id is None:
        claimed = 0
    elif timezone and clock.local_today(timezone, now) != day:
        claimed = claims_today(session, user, pool_id, now)
    return _load_of(session, n_held, cap, senior, timezone, claimed or 0)


_USERS = User.__table__
_LOCK_USER = prebuilt(
    lambda _dialect: (
        update(_USERS).where(_USERS.c.id == bindparam("uid")).values(claim_seq=_USERS.c.claim_seq + 1)
    )
)


def lock_user(session: Session, user_id: int) -> None:
    """Serialise one user's claims/assignments (see module docstring)."""
    session.execute(_LOCK_USER(session), {"uid": user_id})


def _take_slot_statement(dialect: str):
    counts = ClaimCount.__table__
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(counts).values(
        user_id=bindparam("user_id"), pool_id=bindparam("pool_id"), day=bindparam("day"), count=1
    )
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "pool_id", "day"],
        set_={"count": counts.c.count + 1},
        where=counts.c.count < bindparam("limit"),
    ).returning(counts.c.count)


_TAKE_SLOT = prebuilt(_take_slot_statement)


def _take_daily_slot(session: Session, user: User, pool: Pool, now: datetime, tz: str | None) -> int:
    """Count one claim against today's limit, or refuse with how many were used. Returns the new count.

    One upsert: insert the day's row at 1, or add 1 to it only while it is below the limit (``RETURNING``
    gives nothing when the limit is reached). Safe under concurrency: the unique (user, pool, day) key
    and the row lock of the conflicting row serialise it.
    """
    day = clock.local_today(tz, now)
    limit = pool.daily_claim_limit
    taken = None
    if limit >= 1:
        params = {"user_id": user.id, "pool_id": pool.id, "day": day, "limit": limit}
        taken = session.execute(_TAKE_SLOT(session), params).first()
    if taken is None:
        used = session.scalar(
            select(ClaimCount.count).where(
                ClaimCount.user_id == user.id, ClaimCount.pool_id == pool.id, ClaimCount.day == day
            )
        )
        used = used or 0
        raise PoolRefusal(
            "daily_limit",
            _(
                "今日已领 %(used)s/%(limit)s,已达「%(pool)s」每日领取上限,明天再来。",
                used=used,
                limit=limit,
                pool=pool.name,
            ),
            used=used,
            limit=limit,
            remaining=0,
        )
    return taken[0]


def _cap_refusal(user: User, held: int, cap: int, extra: int) -> PoolRefusal:
    if extra == 1:
        message = _(
            "%(name)s 已持有 %(held)s/%(cap)s 个客户,达到保有量上限。", name=user.name, held=held, cap=cap
        )
    else:
        message = _(
            "%(name)s 已持有 %(held)s/%(cap)s 个客户,再接收 %(extra)s 个会超过保有量上限(还可接收 %(left)s 个)。",
            name=user.name,
            held=held,
            cap=cap,
            extra=extra,
            left=max(0, cap - held),
        )
    return PoolRefusal("holding_cap", message, held=held, cap=cap, remaining=max(0, cap - held))


def _check_cap(session: Session, user: User, extra: int = 1, *, override: bool = False) -> bool:
    """Refuse when ``extra`` more customers would exceed the cap; True when an override was needed."""
    cap = holding_cap(session, user)
    held = held_count(session, user.id)
    if held + extra > cap:
        if not override:
            raise _cap_refusal(user, held, cap, extra)
        return True
    return False


def embargo_opens_at(pool: Pool | None, entered_at: datetime | None) -> datetime | None:
    """When a customer that entered ``pool`` at ``entered_at`` becomes claimable under the pool's embargo
    (入池冷静期; None: no embargo). Assignments by pool admins and managers are not held back."""
    if pool is None or not pool.embargo_hours or entered_at is None:
        return None
    return entered_at + timedelta(hours=pool.embargo_hours)


def previous_owner_window(customer: Customer, pool: Pool) -> datetime | None:
    """When the pool's previous-owner rule stops applying to this customer (None: it does not apply)."""
    if (
        pool.prev_owner_rule == PrevOwnerRule.NONE
        or customer.last_released_at is None
        or customer.last_owner_id is None
        or not pool.prev_owner_days
    ):
        return None
    return customer.last_released_at + timedelta(days=pool.prev_owner_days)


def _check_previous_owner(customer: Customer, pool: Pool, user: User, now: datetime) -> None:
    window_end = previous_owner_window(customer, pool)
    if window_end is None or now >= window_end:
        return
    is_last_owner = customer.last_owner_id == user.id
    when = clock.local(window_end).strftime("%Y-%m-%d %H:%M")
    if pool.prev_owner_rule == PrevOwnerRule.COOLDOWN and is_last_owner:
        raise PoolRefusal(
            "cooldown",
            _("你是该客户的上一任负责人,冷却期内不能重新领取,%(when)s 后可领。", when=when),
            until=window_end.isoformat(),
        )
    if pool.prev_owner_rule == PrevOwnerRule.PRIORITY and not is_last_owner:
        raise PoolRefusal(
            "priority_window",
            _("该客户处于原负责人优先领取期,%(when)s 后其他人可领。", when=when),
            until=window_end.isoformat(),
        )


def _taken_refusal(session: Session, customer_id: int) -> PoolRefusal:
    owner_name = session.scalar(
        select(User.name).join(Customer, Customer.owner_id == User.id).where(Customer.id == customer_id)
    )
    if owner_name:
        return PoolRefusal("taken", _("已被 %(name)s 领取。", name=owner_name), owner=owner_name)
    return PoolRefusal("taken", _("该客户已不在公海中,请刷新。"))


def _get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id, populate_existing=True)
    if customer is None or customer.merged_into_id is not None:
        raise PoolRefusal("not_found", _("客户不存在。"))
    return customer


def _live_pool(session: Session, pool_id: int | None) -> Pool:
    pool = session.get(Pool, pool_id) if pool_id else None
    if pool is None or pool.deleted_at is not None:
        raise PoolRefusal("not_found", _("客户所在公海不存在。"))
    return pool


def is_senior(user: User) -> bool:
    return user.level is not None and bool(user.level.is_senior)


def is_away(user: User, now: datetime) -> bool:
    return user.away_until is not None and user.away_until > now


def start_holding_values(owner_id, now) -> dict:
    """Column values that start a new holding (the recycle clocks restart from here)."""
    return {
        "owner_id": owner_id,
        "holding_no": Customer.holding_no + 1,
        "claimed_at": now,
        "first_contact_at": None,
        "holding_followups": 0,
        "extension_days": 0,
        "nurture_until": None,
        "nurture_set_at": None,
        "visible_from": None,
        "locked_at": None,
        "locked_by_id": None,
        "updated_at": now,
    }


def next_release_at(pool: Pool, now: datetime) -> datetime | None:
    """Fair release (定时释放): the next of the pool's local release times after ``now``.

    None when the pool releases at once (no fair release, or no times configured).
    """
    if not pool.fair_release or not pool.release_times:
        return None
    times = []
    for text in pool.release_times:
        try:
            hour, minute = (int(part) for part in str(text).split(":"))
        except ValueError:
            continue
        times.append((hour, minute))
    today = clock.local_today(None, now)
    for offset in (0, 1):
        for hour, minute in sorted(times):
            at = clock.at_local(today + timedelta(days=offset), hour, minute)
            if at > now:
                return at
    return None


# ---------------------------------------------------------------- claim


@dataclass
class ClaimResult:
    customer: Customer
    pool: Pool
    claims_today: int
    daily_limit: int
    held: int
    cap: int
    pool_admin: bool = False  # the claimant administers the pool (sees contacts unmasked anyway)


def _commit_keeping_loaded(session: Session) -> None:
    """Commit without expiring the loaded objects; rows changed by Core statements are refreshed by hand."""
    target = session() if isinstance(session, scoped_session) else session
    previous = target.expire_on_commit
    target.expire_on_commit = False
    try:
        target.commit()
    finally:
        target.expire_on_commit = previous


def _claim_lookup(_dialect: str):
    """The customer, its pool, the user's roles there and what they hold (after ``lock_user``)."""
    uid, team_id, level_id = bindparam("uid"), bindparam("team_id"), bindparam("level_id")
    return (
        select(
            Customer,
            Pool,
            *pool_role_exprs(uid, team_id, Customer.pool_id),
            *_user_load_columns(uid, level_id, team_id),
        )
        .outerjoin(Pool, Pool.id == Customer.pool_id)
        .where(Customer.id == bindparam("cid"))
        .execution_options(populate_existing=True)
    )


def _claim_update(_dialect: str):
    """The conditional update of a claim; it returns the whole new row into the loaded customer."""
    return (
        update(Customer)
        .where(
            Customer.id == bindparam("cid"),
            Customer.owner_id.is_(None),
            Customer.pool_id == bindparam("home_pool"),
            Customer.merged_into_id.is_(None),
        )
        .values(**start_holding_values(bindparam("uid"), bindparam("now")))
        .returning(Customer)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


# Built once (claims are the hottest write path: no statement construction per request).
_CLAIM_LOOKUP = prebuilt(_claim_lookup)
_CLAIM_UPDATE = prebuilt(_claim_update)


def claim(session: Session, customer_id: int, user: User, now: datetime) -> ClaimResult:
    """领取: take an unowned customer from its pool. Atomic; commits on success, rolls back on refusal.

    Refuses (``PoolRefusal``) when missing, not a member, taken, pool disabled, not yet released,
    senior-only, previous-owner rule, holding cap or daily limit — each message says which limit and
    what is left.
    """
    try:
        lock_user(session, user.id)
        # One round trip, after ``lock_user`` (the held count cannot change under us).
        params = {"cid": customer_id, "uid": user.id, "team_id": user.team_id, "level_id": user.level_id,
                  "count_won": won_count_toward_cap(session)}  # fmt: skip
        found = session.execute(_CLAIM_LOOKUP(session), params).first()
        if found is None:
            raise PoolRefusal("not_found", _("客户不存在。"))
        if found[0].merged_into_id is not None:
            winner = found[0].merged_into_id
            raise PoolRefusal("merged", _("该客户已合并到 #%(id)s。", id=winner), merged_into=winner)
        customer, pool, is_admin, is_member, *load_values = found
        if not user.active:
            raise PoolRefusal("inactive_user", _("账号已停用。"))
        if pool is None or pool.deleted_at is not None:
            raise PoolRefusal("not_found", _("客户所在公海不存在。"))
        # Membership first: a stranger must not learn who owns a customer of a pool they cannot see.
        roles = roles_from(user, is_admin, is_member)
        if not roles[1]:
            raise PoolRefusal(
                "not_member", _("你不是「%(pool)s」的成员,不能领取其中的客户。", pool=pool.name)
            )
        if customer.owner_id is not None:
            if customer.owner_id == user.id:
                raise PoolRefusal("taken", _("你已经是该客户的负责人。"), owner=user.name)
            raise _taken_refusal(session, customer_id)
        if not pool.enabled:
            raise PoolRefusal("pool_disabled", _("「%(pool)s」已停用,暂不能领取。", pool=pool.name))
        if customer.visible_from is not None and customer.visible_from > now:
            raise PoolRefusal(
                "not_released",
                _(
                    "该客户将于 %(when)s 释放,届时可领。",
                    when=clock.local(customer.visible_from).strftime("%m-%d %H:%M"),
                ),
                until=customer.visible_from.isoformat(),
            )
        opens = embargo_opens_at(pool, customer.pool_entered_at)
        if opens is not None and opens > now:
            raise PoolRefusal(
                "embargo",
                _("该客户入池冷静期中,%(when)s 起可领取。", when=clock.local(opens).strftime("%m-%d %H:%M")),
                until=opens.isoformat(),
            )
        load = _load_of(session, *load_values)
        if customer.senior_only and not load.senior:
            raise PoolRefusal("senior_only", _("该客户为高难度客户,仅资深销售可领取。"))
        _check_previous_owner(customer, pool, user, now)
        if load.held + 1 > load.cap:
            raise _cap_refusal(user, load.held, load.cap, 1)
        used = _take_daily_slot(session, user, pool, now, load.timezone)
        taken = session.execute(
            _CLAIM_UPDATE(session), {"cid": customer_id, "home_pool": pool.id, "uid": user.id, "now": now}
        ).first()
        if taken is None:
            raise _taken_refusal(session, customer_id)
        customer = taken[0]
        kind = EventKind.RECLAIMED if customer.last_owner_id == user.id else EventKind.CLAIMED
        record_events(session, [dict(
            customer_id=customer_id, kind=kind, at=now, actor_id=user.id, to_user_id=user.id, pool_id=pool.id,
            holding_no=customer.holding_no,
            result=_("领取成功 (今日 %(used)s/%(limit)s)", used=used, limit=pool.daily_claim_limit),
        )])  # fmt: skip
        announce_ownership_change(session, [customer_id], now)
        # What the board row shows, read inside this transaction: after the commit the row renders from
        # the loaded objects without opening another transaction.
        customer.tags, customer.last_owner  # noqa: B018 - loads them
        _commit_keeping_loaded(session)
    except Exception as exc:
        session.rollback()
        claim_outcome(exc.code if isinstance(exc, PoolRefusal) else "error")
        raise
    claim_outcome("ok")
    return ClaimResult(
        customer=customer,
        pool=pool,
        claims_today=used,
        daily_limit=pool.daily_claim_limit,
        held=load.held + 1,
        cap=load.cap,
        pool_admin=roles[0],
    )


# ---------------------------------------------------------------- release


def release_reasons(session: Session) -> list[str]:
    return store.get(session, "pool")["release_reasons"]


def check_release_input(session: Session, reason: str | None, note: str | None) -> tuple[str, str]:
    """The cleaned reason and handoff note, or a ``PoolRefusal('invalid')`` naming the field."""
    reason = (reason or "").strip()
    note = (note or "").strip()
    if reason not in release_reasons(session):
        raise PoolRefusal("invalid", _("请选择退回原因。"), field="reason")
    if len(note) < NOTE_MIN_CHARS:
        raise PoolRefusal(
            "invalid",
            _("请填写交接说明(至少 %(n)s 个字),方便下一位同事跟进。", n=NOTE_MIN_CHARS),
            field="note",
        )
    if len(note) > NOTE_MAX_CHARS:
        raise PoolRefusal("invalid", _("交接说明不超过 %(n)s 字。", n=NOTE_MAX_CHARS), field="note")
    return reason, note


def release(
    session: Session, customer_id: int, actor: User, reason: str, note: str, now: datetime
) -> Customer:
    """退回公海: the owner (or their manager) puts a customer back with a reason and a handoff note.

    Does not refund the day's claim count. Commits.
    """
    try:
        lock_user(session, actor.id)
        customer = _get_customer(session, customer_id)
        refusal = release_refusal(session, actor, customer)
        if refusal is not None:
            raise refusal
        reason, note = check_release_input(session, reason, note)
        rows = _lock_rows(session, [customer_id])
        if customer.pool_id is None:
            raise PoolRefusal("invalid", _("该客户没有所属公海,请由主管转移给其他同事。"))
        end_holdings(session, rows, EventKind.RELEASED, now, actor=actor, reason=reason, note=note)
        session.commit()
    except Exception:
        session.rollback()
        raise
    session.refresh(customer)
    return customer


def _lock_rows(session: Session, ids: list[int]) -> list:
    """The ownership columns of ``ids``, locked until commit (PostgreSQL ``FOR UPDATE``; SQLite holds
    the database write lock already because every caller writes first)."""
    query = (
        select(
            Customer.id,
            Customer.owner_id,
            Customer.pool_id,
            Customer.holding_no,
            Customer.holding_followups,
            Customer.merged_into_id,
            Customer.senior_only,
        )
        .where(Customer.id.in_(ids))
        .order_by(Customer.id)
    )
    if is_postgres(session):
        query = query.with_for_update()
    return session.execute(query).all()


def end_holdings(
    session: Session,
    rows: list,
    kind: str,
    now: datetime,
    *,
    actor: User | None = None,
    actor_system: str | None = None,
    reason: str | None = None,
    note: str | None = None,
    result: str | None = None,
    fallback_pool_id: int | None = None,
) -> list[int]:
    """Put owned customers (rows from ``_lock_rows``) back into their home pools, set-based, one ledger row
    each. Customers without a home pool go to ``fallback_pool_id``. Fair-release pools hide them until
    the next release time. Returns the ids moved."""
    by_target: dict[int, list] = {}
    for row in rows:
        target = row.pool_id or fallback_pool_id
        if row.owner_id is None or target is None:
            continue
        by_target.setdefault(target, []).append(row)
    moved: list[int] = []
    events: list[dict] = []
    for target, group in by_target.items():
        pool = session.get(Pool, target)
        ids = [r.id for r in group]
        changed = session.execute(
            update(Customer)
            .where(Customer.id.in_(ids), Customer.owner_id.is_not(None))
            .values(
                owner_id=None,
                pool_id=target,
                last_owner_id=Customer.owner_id,
                last_released_at=now,
                pool_entered_at=now,
                visible_from=next_release_at(pool, now) if pool is not None else None,
                extension_days=0,
                nurture_until=None,
                nurture_set_at=None,
                locked_at=None,
                locked_by_id=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != len(ids):
            raise PoolRefusal("not_owner", _("客户的负责人刚刚发生变更,请刷新后重试。"))
        for r in group:
            events.append(
                dict(
                    customer_id=r.id, kind=kind, at=now, actor_id=actor.id if actor else None,
                    actor_system=None if actor else actor_system, from_user_id=r.owner_id,
                    pool_id=r.pool_id or target, to_pool_id=target if target != r.pool_id else None,
                    reason=reason, note=note, holding_followups=r.holding_followups, holding_no=r.holding_no,
                    result=result,
                )
            )  # fmt: skip
        moved += ids
    record_events(session, events)
    announce_ownership_change(session, moved, now)
    return moved


# ---------------------------------------------------------------- assign / transfer


def can_assign_from_pool(session: Session, actor: User, pool_id: int) -> bool:
    return permissions.can_assign_from_pool(session, actor, pool_id)


@dataclass
class AssignResult:
    assigned: list[int]
    refused: dict[int, PoolRefusal] = field(default_factory=dict)
    override_used: bool = False

    @property
    def messages(self) -> dict[int, str]:
        return {cid: r.message for cid, r in self.refused.items()}


def check_receiver(user: User | None, now: datetime) -> User:
    """A receiver of customers must exist, be active and not on leave."""
    if user is None:
        raise PoolRefusal("not_found", _("接收人不存在。"), field="user_id")
    if not user.active:
        raise PoolRefusal(
            "inactive_user", _("%(name)s 已停用,不能接收客户。", name=user.name), field="user_id"
        )
    if is_away(user, now):
        raise PoolRefusal(
            "user_away",
            _("%(name)s 休假中(至 %(until)s),暂不能接收客户。", name=user.name,
              until=clock.local(user.away_until).strftime("%m-%d %H:%M")),
            field="user_id",
        )  # fmt: skip
    return user


class _Rights:
    """Memoised permission answers for one bulk action (avoids a query per customer)."""

    def __init__(self, session: Session, actor: User, receiver: User):
        self.session, self.actor, self.receiver = session, actor, receiver
        self._team = team_member_ids(session, actor) if actor.role == Role.MANAGER else None
        self._pool_admin: dict[int, bool] = {}
        self._receive: dict[int | None, bool] = {}

    def manages(self, user_id: int) -> bool:
        if self.actor.role == Role.ADMIN:
            return True
        return self._team is not None and user_id in self._team

    def assigns_from(self, pool_id: int) -> bool:
        if pool_id not in self._pool_admin:
            self._pool_admin[pool_id] = can_assign_from_pool(self.session, self.actor, pool_id)
        return self._pool_admin[pool_id]

    def gives_to_receiver(self, pool_id: int | None) -> bool:
        if pool_id not in self._receive:
            self._receive[pool_id] = can_receive_from(self.session, self.actor, self.receiver, pool_id)
        return self._receive[pool_id]


def transfer_refusal(actor: User) -> PoolRefusal:
    """Why ``actor`` may not move someone else's customer: a rep transfers nothing (even within their own
    team); a manager only within the team they manage."""
    if actor.role == Role.MANAGER:
        return PoolRefusal("forbidden", _("你不能转移其他团队的客户。"))
    return PoolRefusal("forbidden", _("只有负责人的主管或管理员可以转移客户。"))


def assign_refusal(session: Session, actor: User, customer: Customer) -> PoolRefusal | None:
    """The refusal of assigning / transferring ``customer`` whoever the receiver, checked before the body
    is read (permission first): None when ``actor`` may move it."""
    if customer.owner_id is None:
        if customer.pool_id is not None and can_assign_from_pool(session, actor, customer.pool_id):
            return None
        return PoolRefusal("forbidden", _("你不是该客户所在公海的管理员,不能分配。"))
    if manages(session, actor, customer.owner_id):
        return None
    return transfer_refusal(actor)


def release_refusal(session: Session, actor: User, customer: Customer) -> PoolRefusal | None:
    """The refusal of releasing ``customer`` by ``actor`` (checked before the reason and note are read)."""
    if customer.owner_id is None:
        return PoolRefusal("not_owner", _("该客户已在公海中。"))
    if customer.owner_id != actor.id and not manages(session, actor, customer.owner_id):
        return PoolRefusal("forbidden", _("只有负责人或其主管可以退回该客户。"))
    return None


def assign(
    session: Session,
    customer_ids: Iterable[int],
    to_user: User | None,
    actor: User,
    now: datetime,
    *,
    override_cap: bool = False,
    note: str | None = None,
    limit: int | None = MAX_BULK,
) -> AssignResult:
    """分配/转移: give pool customers to a user, or move owned customers to another user, in bulk.

    Pool customers: managers, admins and the pool's admins. Owned customers: the owner's manager or an
    admin. The receiver must be someone the actor may give to (``permissions.can_receive_from``), active
    and not away. The receiver's holding cap holds for the whole batch unless a manager/admin overrides it
    (the override is ledgered). Customers that cannot be moved are reported in ``refused`` with a
    reason; the rest move. Commits. A single refused customer raises its ``PoolRefusal`` instead.
    """
    ids = list(dict.fromkeys(int(i) for i in customer_ids))
    if not ids:
        raise PoolRefusal("invalid", _("请选择要分配的客户。"), field="customer_ids")
    if limit is not None and len(ids) > limit:
        raise PoolRefusal("invalid", _("一次最多分配 %(n)s 个客户。", n=limit), field="customer_ids")
    if override_cap and actor.role not in (Role.MANAGER, Role.ADMIN):
        raise PoolRefusal("forbidden", _("只有主管或管理员可以突破保有量上限。"), field="override_cap")
    to_user = check_receiver(to_user, now)
    try:
        lock_user(session, to_user.id)
        rows = {r.id: r for r in _lock_rows(session, ids)}
        rights = _Rights(session, actor, to_user)
        refused: dict[int, PoolRefusal] = {}
        movable: list = []
        for cid in ids:
            row = rows.get(cid)
            if row is None or row.merged_into_id is not None:
                refused[cid] = PoolRefusal("not_found", _("客户不存在。"))
            elif row.owner_id is None and (row.pool_id is None or not rights.assigns_from(row.pool_id)):
                refused[cid] = PoolRefusal("forbidden", _("你不是该客户所在公海的管理员,不能分配。"))
            elif row.owner_id is not None and not rights.manages(row.owner_id):
                refused[cid] = transfer_refusal(actor)
            elif row.owner_id == to_user.id:
                refused[cid] = PoolRefusal("taken", _("已由 %(name)s 负责。", name=to_user.name))
            elif not rights.gives_to_receiver(row.pool_id):
                refused[cid] = PoolRefusal(
                    "forbidden", _("你不能把客户分配给 %(name)s(不在你的团队或该公海中)。", name=to_user.name)
                )
            elif row.senior_only and not is_senior(to_user):
                refused[cid] = PoolRefusal(
                    "senior_only",
                    _("高难度客户只能分配给资深销售,%(name)s 不是资深职级。", name=to_user.name),
                )
            else:
                movable.append(row)
        if len(ids) == 1 and refused:
            raise refused[ids[0]]
        override_used = bool(movable) and _check_cap(session, to_user, len(movable), override=override_cap)
        assigned = _start_holdings(
            session, movable, to_user, now, actor=actor, note=note, override=override_used
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return AssignResult(assigned=assigned, refused=refused, override_used=override_used)


def transfer(
    session: Session,
    customer_ids: Iterable[int],
    to_user: User | None,
    actor: User,
    now: datetime,
    **kwargs,
) -> AssignResult:
    """转移: move owned customers to another user. The same rules as ``assign``, for owned customers only."""
    ids = list(dict.fromkeys(int(i) for i in customer_ids))
    unowned = set(
        session.scalars(select(Customer.id).where(Customer.id.in_(ids), Customer.owner_id.is_(None)))
    )
    owned = [i for i in ids if i not in unowned]
    if len(ids) == 1 and unowned:
        raise PoolRefusal("not_owner", _("该客户在公海中,请用分配。"))
    result = assign(session, owned, to_user, actor, now, **kwargs) if owned else AssignResult(assigned=[])
    for cid in unowned:
        result.refused[cid] = PoolRefusal("not_owner", _("该客户在公海中,请用分配。"))
    return result


def _start_holdings(
    session: Session,
    rows: list,
    to_user: User,
    now: datetime,
    *,
    actor: User | None = None,
    actor_system: str | None = None,
    note: str | None = None,
    override: bool = False,
    pool_kind: str = EventKind.ASSIGNED,
) -> list[int]:
    """Give locked rows to ``to_user`` in one UPDATE and write one ledger row each (assigned from a pool,
    transferred from an owner)."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    changed = session.execute(
        update(Customer)
        .where(Customer.id.in_(ids))
        .values(
            **start_holding_values(to_user.id, now),
            last_owner_id=func.coalesce(Customer.owner_id, Customer.last_owner_id),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != len(ids):
        raise PoolRefusal("taken", _("客户刚刚被他人领取或转移,请刷新后重试。"))
    result = _("突破保有量上限分配") if override else None
    events = [
        dict(
            customer_id=r.id, kind=pool_kind if r.owner_id is None else EventKind.TRANSFERRED, at=now,
            actor_id=actor.id if actor else None, actor_system=None if actor else actor_system,
            from_user_id=r.owner_id, to_user_id=to_user.id, pool_id=r.pool_id, note=note,
            holding_no=r.holding_no + 1, holding_followups=r.holding_followups if r.owner_id else None,
            data={"override_cap": True} if override else None, result=result,
        )
        for r in rows
    ]  # fmt: skip
    record_events(session, events)
    tell_receiver(session, to_user.id, [(r.id, r.holding_no + 1) for r in rows], now, actor=actor)
    announce_ownership_change(session, ids, now)
    return ids


def tell_receiver(
    session: Session, user_id: int, moved: list[tuple[int, int]], now: datetime, *, actor: User | None = None
) -> None:
    """The receiver hears of customers assigned / transferred / auto-assigned / handed over to them, through
    their channels, once each (unique key per customer and holding; a bulk move is one summary). Nobody is
    told of what they gave themselves."""
    if not moved or (actor is not None and actor.id == user_id):
        return
    wanted = [c for c, _h in moved[:10]]
    names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(wanted))).all())
    by = actor.name if actor is not None else _("系统")
    if len(moved) == 1:
        ((customer_id, holding_no),) = moved
        notify(
            session, user_id=user_id, kind=ReminderKind.ASSIGNED, customer_id=customer_id,
            title=_("「%(name)s」已分配给你 (%(by)s)", name=names.get(customer_id, ""), by=by),
            unique_key=f"assigned:{customer_id}:{holding_no}", due_at=now, now=now,
        )  # fmt: skip
        return
    shown = "、".join(names.get(c, "") for c, _h in moved[:10]) + (_(" 等") if len(moved) > 10 else "")
    first, holding = min(moved)
    notify(
        session, user_id=user_id, kind=ReminderKind.ASSIGNED, body=shown,
        title=_("%(n)s 个客户已分配给你 (%(by)s)", n=len(moved), by=by),
        unique_key=f"assigned:{first}:{holding}:{len(moved)}", due_at=now, now=now,
    )  # fmt: skip


def return_to_pool(
    session: Session,
    customer_ids: Iterable[int],
    actor: User,
    now: datetime,
    reason: str,
    note: str | None = None,
    *,
    fallback_pool_id: int | None = None,
) -> AssignResult:
    """Put owned customers back into their home pools (managers/admins, e.g. when a rep leaves). Commits.

    Customers without a home pool go to ``fallback_pool_id`` (refused when none is given).
    """
    ids = list(dict.fromkeys(int(i) for i in customer_ids))
    refused: dict[int, PoolRefusal] = {}
    try:
        lock_user(session, actor.id)
        if fallback_pool_id is not None:
            _live_pool(session, fallback_pool_id)
        team = None if actor.role == Role.ADMIN else team_member_ids(session, actor)
        movable = []
        rows = {r.id: r for r in _lock_rows(session, ids)}
        for cid in ids:
            row = rows.get(cid)
            if row is None or row.merged_into_id is not None:
                refused[cid] = PoolRefusal("not_found", _("客户不存在。"))
            elif row.owner_id is None:
                refused[cid] = PoolRefusal("not_owner", _("已在公海中。"))
            elif actor.role not in (Role.ADMIN, Role.MANAGER) or (
                team is not None and row.owner_id not in team
            ):
                refused[cid] = PoolRefusal("forbidden", _("你不能退回其他团队的客户。"))
            elif row.pool_id is None and fallback_pool_id is None:
                refused[cid] = PoolRefusal("invalid", _("该客户没有所属公海,请选择放入的公海。"))
            else:
                movable.append(row)
        done = end_holdings(
            session, movable, EventKind.RELEASED, now, actor=actor, reason=reason, note=note,
            fallback_pool_id=fallback_pool_id,
        )  # fmt: skip
        session.commit()
    except Exception:
        session.rollback()
        raise
    return AssignResult(assigned=done, refused=refused)


def move_all_customers(
    session: Session,
    from_user: User,
    actor: User,
    now: datetime,
    *,
    to_user: User | None = None,
    reason: str | None = None,
    override_cap: bool = False,
    fallback_pool_id: int | None = None,
    limit: int | None = None,
    after_id: int = 0,
) -> AssignResult:
    """Departures (离职/休假): move every customer of ``from_user`` to ``to_user`` or back to their home
    pools, in one action, each move ledgered. Only an admin or the user's manager may do it; the
    receiver's cap holds unless ``override_cap`` (managers/admins), which is ledgered. ``limit`` and
    ``after_id``: the next ``limit`` customers by id (the background handover moves thousands in chunks)."""
    if not manages(session, actor, from_user) or actor.id == from_user.id:
        raise PoolRefusal("forbidden", _("只有管理员或其主管可以移交 %(name)s 的客户。", name=from_user.name))
    if to_user is not None and to_user.id == from_user.id:
        raise PoolRefusal("invalid", _("请选择另一位接收人。"), field="user_id")
    ids = list(
        session.scalars(
            select(Customer.id)
            .where(
                Customer.owner_id == from_user.id, Customer.merged_into_id.is_(None), Customer.id > after_id
            )
            .order_by(Customer.id)
            .limit(limit)
        )
    )
    if not ids:
        return AssignResult(assigned=[])
    reason = reason or _("%(name)s 离职/休假交接", name=from_user.name)
    if to_user is None:
        return return_to_pool(session, ids, actor, now, reason=reason, fallback_pool_id=fallback_pool_id)
    result = assign(session, ids, to_user, actor, now, note=reason, override_cap=override_cap, limit=None)
    return result


# ---------------------------------------------------------------- who can receive


@dataclass
class Receiver:
    """A user offered as the receiver of an assignment, with their load."""

    user: User
    held: int
    cap: int
    away: bool

    @property
    def label(self) -> str:
        return f"{self.user.name} ({self.held}/{self.cap})" + (_(" · 休假中") if self.away else "")


def pool_member_ids(session: Session, pool_id: int) -> set[int]:
    """Users who are members of a pool directly or through their team."""
    from crm.models import PoolMember

    direct = select(PoolMember.user_id).where(PoolMember.pool_id == pool_id, PoolMember.user_id.is_not(None))
    teams = select(PoolMember.team_id).where(PoolMember.pool_id == pool_id, PoolMember.team_id.is_not(None))
    return set(session.scalars(select(User.id).where((User.id.in_(direct)) | (User.team_id.in_(teams)))))


def receivers_for(session: Session, actor: User, pool_id: int | None, now: datetime) -> list[Receiver]:
    """The active users ``actor`` may hand customers of ``pool_id`` to (see ``can_receive_from``), by name."""
    query = select(User).where(User.active.is_(True)).order_by(User.name, User.id)
    if actor.role != Role.ADMIN:
        ids = team_member_ids(session, actor) if actor.role == Role.MANAGER else set()
        if pool_id is not None and is_pool_admin(session, actor, pool_id):
            ids |= pool_member_ids(session, pool_id)
        if actor.role == Role.REP:
            ids.discard(actor.id)
        query = query.where(User.id.in_(ids))
    users = list(session.scalars(query))
    held = dict(
        session.execute(
            select(Customer.owner_id, func.count())
            .where(Customer.owner_id.in_([u.id for u in users]), held_filter(won_count_toward_cap(session)))
            .group_by(Customer.owner_id)
        ).all()
    )
    default_cap = holding_cap_default(session)
    return [
        Receiver(
            user=u,
            held=held.get(u.id, 0),
            cap=u.level.holding_cap if u.level is not None else default_cap,
            away=is_away(u, now),
        )
        for u in users
    ]


@dataclass(frozen=True)
class ClaimGate:
    """Whether 领取 would be refused on a board page, computed once per page (``claim_gate``) so a row needs
    no query: the pool-wide reasons (disabled pool, daily limit, holding cap) and what a row's own columns
    decide (senior-only, previous-owner rule, fair-release time). ``claim`` still checks everything."""

    pool_reason: str | None
    senior: bool
    user_id: int
    now: datetime

    def row_reason(self, row, pool: Pool) -> str | None:
        """Why claiming this board row would be refused now (short, shown beside a disabled 领取), or None."""
        if self.pool_reason:
            return self.pool_reason
        if row.senior_only and not self.senior:
            return _("仅资深销售可领取")
        if row.visible_from is not None and row.visible_from > self.now:
            return _("%(when)s 释放", when=clock.local(row.visible_from).strftime("%m-%d %H:%M"))
        window_end = previous_owner_window(row, pool)
        if window_end is not None and self.now < window_end:
            when = clock.local(window_end).strftime("%m-%d %H:%M")
            is_last_owner = row.last_owner_id == self.user_id
            if pool.prev_owner_rule == PrevOwnerRule.COOLDOWN and is_last_owner:
                return _("冷却期内,%(when)s 后可领", when=when)
            if pool.prev_owner_rule == PrevOwnerRule.PRIORITY and not is_last_owner:
                return _("原负责人优先,%(when)s 后可领", when=when)
        return None


def claim_gate(
    session: Session, user: User, pool: Pool, now: datetime, load: UserLoad | None = None
) -> ClaimGate:
    """The board's ``ClaimGate`` for ``user`` (one query for the load, none when ``load`` is given)."""
    load = load or user_load(session, user, pool.id, now)
    reason = None
    if not pool.enabled:
        reason = _("公海已停用")
    elif pool.daily_claim_limit >= 1 and load.claims_today >= pool.daily_claim_limit:
        reason = _("今日已领 %(used)s/%(limit)s", used=load.claims_today, limit=pool.daily_claim_limit)
    elif load.held >= load.cap:
        reason = _("持有已达上限 %(held)s/%(cap)s", held=load.held, cap=load.cap)
    return ClaimGate(pool_reason=reason, senior=load.senior, user_id=user.id, now=now)
