"""Lead intake (线索录入): the one service behind every channel — ``POST /api/v1/leads``, the public web
form, manual entry (新建), Excel/CSV import and the ``import`` CLI all call ``intake``.

For each lead: normalise and validate; look for an exact duplicate (phone / email / WeChat across customers
and contacts) and route it (撞单): a duplicate of an owned customer becomes a ``duplicate`` activity on its
timeline plus a ``duplicate`` ledger row and the owner is notified; a duplicate of a pool customer is attached
the same way and its arrival time bumped so it rises on the board. Otherwise the lead is created in the
target pool, unowned, lifecycle ``lead``, with a ``created`` ledger row; a fuzzy company match opens a
``DuplicateConflict`` for the conflict queue. New leads are scored; at or above the routing threshold (and
with no open conflict) they are auto-assigned by the pool's strategy; hot crossings notify last, so the
new owner (not the pool admins) hears of a hot lead that was just assigned.

Transactions: ``intake`` commits. All the leads of one call are written in ONE transaction (an import is
all good rows or nothing); auto-assignment then runs per lead in its own transaction (it commits), so a
routing failure never loses an imported lead — it just stays in the pool. Concurrent intakes are
serialised by a lock taken first (a PostgreSQL advisory lock; SQLite's write lock), so two identical leads
posted at once give one customer and one duplicate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from types import SimpleNamespace

from flask_babel import gettext as _
from sqlalchemy import bindparam, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from crm import signals
from crm.dbutil import is_postgres
from crm.inputguard import clean_line, clean_text
from crm.intake import (
    config,
    grams,  # noqa: F401 (installs the key/gram sync hooks)
    normalize,
)
from crm.intake.dedupe import Keys, Match, batch_fuzzy, exact_matches, fuzzy_matches, matches_in
from crm.intake.inserts import insert_leads, insert_unless_duplicate
from crm.intake.txcache import process_memo
from crm.models import (
    Activity,
    AssignStrategy,
    BehaviorEvent,
    Customer,
    CustomerKind,
    DuplicateConflict,
    EventKind,
    ImportBatch,
    Lifecycle,
    PendingDuplicateCheck,
    Pool,
    ReminderKind,
    Stage,
    StageKind,
    User,
)
from crm.notify import notify
from crm.pool.autoassign import auto_assign
from crm.pool.services import record_event
from crm.scoring import config as scoring_config
from crm.scoring import services as scoring

SOURCES = ("api", "form", "import", "manual")
SOURCE_LABELS = {"api": "接口", "form": "网页表单", "import": "批量导入", "manual": "手工录入"}
# Longest values the columns take (longer input is refused, not cut).
LIMITS = {
    "name": 120, "contact_name": 60, "job_title": 60, "job_level": 20, "phone": 40, "email": 254,
    "wechat": 60, "address": 200, "region": 40, "industry": 40, "channel": 60, "campaign": 80,
    "notes": 2000,
}  # fmt: skip
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_ADVISORY_LOCK = 7_300_417  # pg_advisory_xact_lock key of "intake"
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_SQLITE_LOCK = text("UPDATE name_gram_stats SET n = n WHERE gram = ''")


class IntakeError(ValueError):
    """The call as a whole is refused (no pool to put leads in, a disabled pool …)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


UTM_MAX_KEYS, UTM_MAX_KEY, UTM_MAX_VALUE, UTM_MAX_BYTES = 20, 40, 200, 2048


def check_utm(utm: object) -> dict[str, str]:
    """A lead's ``utm`` object as posted: at most 20 keys of ≤ 40 characters, scalar values of
    ≤ 200 characters (numbers become text), ≤ 2 KB in all. ``ValueError`` with a clear message otherwise;
    control characters are dropped (the values are shown on the customer page)."""
    if utm is None:
        return {}
    if not isinstance(utm, dict):
        raise ValueError(_("utm 必须是对象。"))
    if len(utm) > UTM_MAX_KEYS:
        raise ValueError(_("utm 最多 %(n)s 个键。", n=UTM_MAX_KEYS))
    out: dict[str, str] = {}
    for key, value in utm.items():
        key = clean_line(str(key)).strip()
        if not key or len(key) > UTM_MAX_KEY:
            raise ValueError(_("utm 的键不能为空,且不超过 %(n)s 个字符。", n=UTM_MAX_KEY))
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(_("utm 的值必须是文本: %(key)s", key=key))
        text = clean_line(str(value)).strip()
        if len(text) > UTM_MAX_VALUE:
            raise ValueError(_("utm 的值不能超过 %(n)s 个字符: %(key)s", n=UTM_MAX_VALUE, key=key))
        if text:
            out[key] = text
    if len(json.dumps(out, ensure_ascii=False).encode()) > UTM_MAX_BYTES:
        raise ValueError(_("utm 总长度不能超过 %(n)s KB。", n=UTM_MAX_BYTES // 1024))
    return out


@dataclass
class LeadData:
    """One incoming lead, as typed, posted or read from a row. Strings are raw; keys come later."""

    name: str = ""
    contact_name: str = ""
    phone: str = ""
    email: str = ""
    wechat: str = ""
    job_title: str = ""
    job_level: str = ""
    industry: str = ""
    region: str = ""
    company_size: int | str | None = None
    address: str = ""
    notes: str = ""
    channel: str = ""
    campaign: str = ""
    utm: dict = field(default_factory=dict)
    arrived_at: datetime | None = None
    row: int | None = None  # spreadsheet row number (import)

    @classmethod
    def from_dict(cls, data: dict) -> LeadData:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        for key, value in list(values.items()):
            if key not in ("utm", "arrived_at", "row", "company_size") and not isinstance(value, str):
                values[key] = str(value)
        utm = dict(values.get("utm") or {})
        for key in UTM_KEYS:
            if data.get(key):
                utm[key] = str(data[key])
        values["utm"] = {str(k)[:40]: str(v)[:200] for k, v in utm.items() if v}
        return cls(**values)

    def public(self) -> dict:
        """The incoming data as stored on a duplicate activity (what was typed, no keys)."""
        out = {
            key: getattr(self, key)
            for key in (
                "name",
                "contact_name",
                "phone",
                "email",
                "wechat",
                "job_title",
                "industry",
                "region",
                "channel",
                "campaign",
                "notes",
            )  # fmt: skip
            if getattr(self, key)
        }
        if self.company_size not in (None, ""):
            out["company_size"] = self.company_size
        if self.utm:
            out["utm"] = self.utm
        return out


@dataclass
class FieldError:
    field: str
    message: str


@dataclass
class Prepared:
    data: LeadData
    keys: Keys
    kind: str
    company_size: int | None
    errors: list[FieldError]
    # Flagged fields of a lead that is still taken in (an unusable email beside a good phone): the field
    # is left empty on the customer (its raw text kept in the notes) and the answer / report says so.
    warnings: list[FieldError] = field(default_factory=list)


@dataclass
class Outcome:
    """What happened to one lead: ``created``, ``duplicate`` (attached to ``customer_id``) or ``invalid``."""

    status: str
    customer_id: int | None = None
    matched_on: str | None = None
    owner_id: int | None = None
    pool_id: int | None = None
    score: int | None = None
    grade: str | None = None
    conflicts: list[tuple[int, float]] = field(default_factory=list)
    assigned_to: int | None = None
    errors: list[FieldError] = field(default_factory=list)
    row: int | None = None
    warnings: list[FieldError] = field(default_factory=list)
    # "done": ``conflicts`` is the possible-duplicate check's answer; "queued": it runs in the background.
    duplicate_check: str = "done"


# ---------------------------------------------------------------- validation


def prepare(data: LeadData) -> Prepared:
    """Normalise and validate one lead. A lead needs a name (company or person) and a way to reach them."""
    errors: list[FieldError] = []
    for name, limit in LIMITS.items():
        value = getattr(data, name)
        if isinstance(value, str) and len(value.strip()) > limit:
            errors.append(FieldError(name, _("不能超过 %(n)s 个字符。", n=limit)))
    name = normalize.fold(data.name)
    person = normalize.fold(data.contact_name)
    if not name and not person:
        errors.append(FieldError("name", _("请填写公司名称或联系人姓名。")))
    phone_key = email_key = wechat_key = None
    bad_email = bad_wechat = None
    if normalize.fold(data.phone):
        phone_key = normalize.phone_key(data.phone)
        if phone_key is None:
            errors.append(FieldError("phone", normalize.phone_error(data.phone) or _("不是有效的电话号码。")))
    if normalize.fold(data.email):
        if normalize.email_valid(data.email):
            email_key = normalize.email_key(data.email)
        else:
            bad_email = FieldError("email", _("不是有效的邮箱地址。"))
    if normalize.fold(data.wechat):
        if normalize.wechat_valid(data.wechat):
            wechat_key = normalize.wechat_key(data.wechat)
        else:
            bad_wechat = FieldError("wechat", _("微信号只能包含字母、数字、下划线和减号。"))
    if not (normalize.fold(data.phone) or normalize.fold(data.email) or normalize.fold(data.wechat)):
        errors.append(FieldError("phone", _("请至少填写电话、邮箱或微信中的一项。")))
    warnings: list[FieldError] = []
    # An unusable email or WeChat id beside a usable way to reach the lead flags the field; with none
    # usable the lead is refused.
    reachable = bool(phone_key or email_key or wechat_key)
    for bad in (bad_email, bad_wechat):
        if bad is None:
            continue
        if reachable:
            warnings.append(FieldError(bad.field, _("%(reason)s 已留空,线索照常录入。", reason=bad.message)))
        else:
            errors.append(bad)
    size = None
    if data.company_size not in (None, ""):
        size = normalize.company_size(data.company_size)
        if size is None or size > 10_000_000:
            errors.append(FieldError("company_size", _("公司规模请填写人数,例如 120 或 100-499人。")))
            size = None
    kind = CustomerKind.COMPANY if name else CustomerKind.PERSON
    keys = Keys(
        name_key=normalize.name_key(name or person),
        phone_key=phone_key,
        email_key=email_key,
        wechat_key=wechat_key,
    )
    return Prepared(data=data, keys=keys, kind=kind, company_size=size, errors=errors, warnings=warnings)


# ---------------------------------------------------------------- pools


def lead_pool(session: Session, now: datetime) -> Pool:
    """The pool leads go to when none is named: the one in settings, else the first enabled pool of kind
    "lead"; a database without one gets a 新线索池 (so the API works on a fresh install).

    The choice is remembered per process (``process_memo``: dropped when this process writes a pool or
    a setting); the pool row itself is read each time, so a pool disabled or deleted since is never used."""
    cached = _lead_pool_id(session)
    pool = session.get(Pool, cached) if cached else None
    if pool is not None and _usable(pool):
        return pool
    return _new_lead_pool(session, now)


def _lead_pool_id(session: Session) -> int | None:
    return process_memo(session, "lead_pool_id", lambda: _usable(_choose_lead_pool(session)))


def _new_lead_pool(session: Session, now: datetime) -> Pool:
    """``lead_pool`` when the remembered choice is gone: choose again, or make a 新线索池."""
    pool = _choose_lead_pool(session)
    if pool is None:
        pool = Pool(name="新线索池", description=_("新进线索,等待分配或领取"), kind="lead", created_at=now,
                    release_times=[])  # fmt: skip
        session.add(pool)
        session.flush()
    return pool


def _usable(pool: Pool | None) -> int | None:
    return pool.id if pool is not None and pool.deleted_at is None and pool.enabled else None


def _choose_lead_pool(session: Session) -> Pool | None:
    pool_id = config.get(session)["lead_pool_id"]
    pool = session.get(Pool, pool_id) if pool_id else None
    if pool is not None and pool.deleted_at is None and pool.enabled:
        return pool
    pool = session.scalar(
        select(Pool)
        .where(Pool.kind == "lead", Pool.enabled.is_(True), Pool.deleted_at.is_(None))
        .order_by(Pool.id)
        .limit(1)
    )
    if pool is None:
        pool = session.scalar(select(Pool).where(Pool.name == "新线索池"))
    return pool


def _check_pool(pool: Pool) -> None:
    if pool.deleted_at is not None:
        raise IntakeError("pool_not_found", _("线索池不存在。"))
    if not pool.enabled:
        raise IntakeError("pool_disabled", _("「%(pool)s」已停用,不能接收线索。", pool=pool.name))


def _lock(session: Session) -> None:
    """Serialise intakes (and merges): the check-then-create of ``intake`` must not interleave with
    another's. PostgreSQL: an advisory lock; SQLite: its database write lock, which any write takes for
    the rest of the transaction."""
    if is_postgres(session):
        session.execute(_PG_LOCK, {"k": _ADVISORY_LOCK})
    else:
        session.execute(_SQLITE_LOCK)


def _lock_with_pool(session: Session, pool: Pool | None, now: datetime) -> Pool:
    """``_lock``, and the pool the leads go to: ``pool``, else the lead pool (``lead_pool``). PostgreSQL
    takes its lock in the statement that reads the lead pool's row (one round trip for both: an API lead
    names no pool)."""
    if pool is not None or not is_postgres(session) or (pool_id := _lead_pool_id(session)) is None:
        _lock(session)
        return pool or lead_pool(session, now)
    found = session.scalar(_PG_LOCK_WITH_POOL, {"k": _ADVISORY_LOCK, "pool_id": pool_id})
    return found if _usable(found) else _new_lead_pool(session, now)


# The lock taken in a one-row subquery, so it is held even when the pool's row is not found.
_PG_LOCK_WITH_POOL = (
    select(Pool)
    .select_from(select(func.pg_advisory_xact_lock(bindparam("k")).label("locked")).subquery("intake_lock"))
    .outerjoin(Pool, Pool.id == bindparam("pool_id"))
)


def _first_stage_id(session: Session) -> int | None:
    return process_memo(
        session,
        "first_stage",
        lambda: session.scalar(
            select(Stage.id)
            .where(Stage.kind == StageKind.OPEN, Stage.active.is_(True))
            .order_by(Stage.position)
            .limit(1)
        ),
    )


# ---------------------------------------------------------------- intake


def intake(
    session: Session,
    leads: list[LeadData],
    *,
    source: str,
    now: datetime,
    pool: Pool | None = None,
    actor: User | None = None,
    batch: ImportBatch | None = None,
    route: bool = True,
    prepared: list[Prepared] | None = None,
    defer_fuzzy: bool = False,
    batch_final: bool = True,
    below: int | None = None,
) -> list[Outcome]:
    """Take ``leads`` in through one path (see the module docstring). Commits; returns one outcome each.

    ``prepared`` may pass the already-validated leads (the import preview did it). Invalid leads come
    back as ``invalid`` outcomes and change nothing.

    ``defer_fuzzy`` (the API): the possible-duplicate check of a new lead that cannot be auto-assigned
    anyway (its pool has no strategy, or it scores below the routing threshold) runs in an rq job after
    the commit — the conflict queue is reviewed later, and a feed of leads should not wait on it. Leads
    that routing depends on (a possible duplicate holds routing back) are checked here as always. The
    pending check is written with the lead (``PendingDuplicateCheck``), so none is lost; with Redis
    unreachable it runs at once, after the commit.

    An import in chunks (``crm.intake.importer.import_rows``) passes each chunk with the same ``batch``:
    its counts add up and its resume point (``rows_done``) moves in the chunk's transaction; only the last
    chunk (``batch_final``) marks it imported. ``below``: the batch's first customer id, so a later chunk's
    similar-name check looks at older customers only (as one call excludes its own leads).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    try:
        # First statement that writes: the lock (SQLite's write lock, or PostgreSQL's advisory lock).
        pool = _lock_with_pool(session, pool, now)
        _check_pool(pool)
        score_cfg = scoring_config.get(session)
        prepared = prepared or [prepare(lead) for lead in leads]
        outcomes = [Outcome(status="invalid", errors=p.errors, row=p.data.row) for p in prepared]
        valid = [i for i, p in enumerate(prepared) if not p.errors]
        # One lead on PostgreSQL: the duplicate look-up is made by the statement that writes it (below).
        look_up_in_insert = len(valid) == 1 and is_postgres(session)
        matches = [None] if look_up_in_insert else exact_matches(session, [prepared[i].keys for i in valid])
        fuzzy_threshold = config.get(session)["fuzzy_threshold"]
        stage_id = _first_stage_id(session)
        created: list[tuple[int, SimpleNamespace]] = []
        asked_again: list[int] = []  # form duplicates: another submission is interest, so they rescore
        duplicates_by_owner: dict[int, list[str]] = defaultdict(list)
        texts = _Texts(source)
        bumped: list[int] = []
        seen_keys: dict[str, int] = {}  # key → index of the lead of this call that will carry it
        repeats: list[tuple[int, int, str]] = []  # (index, index of the earlier lead, matched on)

        def attach(index: int, match: Match) -> None:
            outcomes[index] = _attach(session, prepared[index], match, source, now, actor, batch, texts)
            if match.owner_id is None:
                bumped.append(match.customer_id)
            if source == "form":
                asked_again.append(match.customer_id)
            if match.owner_id is not None:
                duplicates_by_owner[match.owner_id].append(match.name)

        for index, match in zip(valid, matches, strict=True):
            p = prepared[index]
            if match is None:
                # The same person twice in one call (an API batch): the later one is a duplicate of the first.
                earlier = next(((seen_keys[k], how) for k, how in p.keys.lookups() if k in seen_keys), None)
                if earlier is not None:
                    repeats.append((index, earlier[0], earlier[1]))
                    continue
                for k, _how in p.keys.lookups():
                    seen_keys.setdefault(k, index)
            if match is not None:
                attach(index, match)
                continue
            customer = _new_customer(p, source, now, pool, stage_id, batch)
            # Scored before it is written: a new lead's facts are its own fields (and this submission).
            scoring.score_new(
                session, customer, [("form_submit", now)] if source == "form" else [], now, score_cfg
            )
            created.append((index, customer))
        session.flush()
        deferred = {id(c) for c in _deferrable(pool, created, score_cfg, route)} if defer_fuzzy else set()
        # The customers, their grams, their "created" ledger rows and pending checks (no ORM unit of work
        # for rows nobody reads back here).
        events = [
            {"kind": EventKind.CREATED, "at": now, "actor_id": actor.id if actor else None,
             "actor_system": None if actor else f"intake:{source}", "pool_id": pool.id,
             "result": customer.channel or texts.source,
             "data": {"source": source, "channel": customer.channel, "campaign": customer.campaign,
                      "batch_id": batch.id if batch else None}}
            for _i, customer in created
        ]  # fmt: skip
        check_later = [id(customer) in deferred for _i, customer in created]
        if look_up_in_insert and created:
            ((index, customer),) = created
            found = insert_unless_duplicate(session, customer, events[0], check_later[0])
            match = matches_in(found, [prepared[index].keys])[0]
            if match is not None:
                created.clear()
                attach(index, match)
            elif customer.id is None:
                raise RuntimeError("a lead was neither written nor found to be a duplicate")
        else:
            insert_leads(session, [customer for _i, customer in created], events, check_later)
        by_index = dict(created)
        for index, first, matched_on in repeats:
            lead = by_index[first]
            match = Match(lead.id, None, pool.id, lead.name, matched_on, False)
            outcomes[index] = _attach(session, prepared[index], match, source, now, actor, batch, texts)
            if source == "form":
                asked_again.append(lead.id)
        _bump(session, sorted(set(bumped)), now)
        for index, customer in created:
            if source == "form":
                session.add(BehaviorEvent(customer_id=customer.id, type="form_submit", at=now, data={}))
            outcomes[index] = Outcome(status="created", customer_id=customer.id, pool_id=pool.id,
                                      row=prepared[index].data.row)  # fmt: skip
        for index in valid:
            outcomes[index].warnings = prepared[index].warnings
        deferred_ids = [c.id for _i, c in created if id(c) in deferred]
        _open_conflicts(
            session, [x for x in created if id(x[1]) not in deferred], outcomes, fuzzy_threshold, now,
            exclude={c.id for _i, c in created}, below=below,
        )  # fmt: skip
        for customer_id in asked_again:
            session.add(
                BehaviorEvent(customer_id=customer_id, type="form_submit", at=now, data={"duplicate": True})
            )
        _notify_duplicates(session, duplicates_by_owner, outcomes, source, now, batch)
        new_ids = [c.id for _i, c in created]
        for index, customer in created:
            outcomes[index].score, outcomes[index].grade = customer.score, customer.grade
        scored = scoring.recompute(session, asked_again, now, crossings=False, cfg=score_cfg)
        for outcome in outcomes:
            if outcome.customer_id in scored:
                outcome.score = scored[outcome.customer_id].score
                outcome.grade = scored[outcome.customer_id].grade
        _fill_duplicate_scores(session, outcomes)
        if created and signals.customer_created.receivers:
            for customer in session.scalars(select(Customer).where(Customer.id.in_(new_ids))):
                signals.customer_created.send(customer, session=session, now=now)
        if batch is not None:
            # The batch's counts and resume point change in the same transaction as its rows; it flips to
            # "imported" with its last chunk.
            if batch.first_customer_id is None and created:
                batch.first_customer_id = min(c.id for _i, c in created)
            batch.rows_done = (batch.rows_done or 0) + len(prepared)
            batch.rows_created = (batch.rows_created or 0) + len(created)
            batch.rows_duplicate = (batch.rows_duplicate or 0) + sum(
                1 for o in outcomes if o.status == "duplicate"
            )
            if batch_final:
                batch.status = "imported"
                batch.finished_at = now
        to_route = _routable(pool, [outcomes[i] for i, _c in created], score_cfg) if route else []
        rescored = (new_ids if to_route else []) + asked_again
        if not to_route:
            # Nothing to assign: new hot leads are flagged here and their pool's admins told, in this
            # same transaction (a new lead has no earlier crossing to compare with).
            hot_new = [c for _i, c in created if c.score >= score_cfg["hot_threshold"]]
            if hot_new:
                session.execute(
                    update(_CUSTOMERS).where(_CUSTOMERS.c.id.in_([c.id for c in hot_new])).values(is_hot=True)
                )
                scoring.notify_crossings(session, hot_new, now)
            scoring.update_hot_flags(session, now, ids=asked_again, cfg=score_cfg)
        session.commit()
    except Exception:
        session.rollback()
        raise
    if deferred_ids:
        _check_later(session, deferred_ids, [o for o in outcomes if o.customer_id in set(deferred_ids)], now)
    if to_route:
        # Assigned first (auto_assign commits per lead), so a hot lead's crossing reaches its new owner.
        for outcome in to_route:
            user = auto_assign(session, outcome.customer_id, now)
            if user is not None:
                outcome.assigned_to = outcome.owner_id = user.id
        scoring.update_hot_flags(session, now, ids=rescored, cfg=score_cfg)
        session.commit()
    return outcomes


def _new_customer(
    p: Prepared, source: str, now: datetime, pool: Pool, stage_id: int | None, batch: ImportBatch | None
) -> SimpleNamespace:
    """The column values of a new lead (inserted set-based by ``intake``; attribute names as on Customer)."""
    d = p.data

    def clean(value: str) -> str | None:
        # Single-line: imported cells and API values may carry line breaks and control characters.
        value = clean_line(normalize.fold(value)).strip()
        return value or None

    arrived = d.arrived_at if d.arrived_at is not None and d.arrived_at <= now else now
    name = clean(d.name) or clean(d.contact_name)
    flagged = {w.field for w in p.warnings}
    notes = clean_text(d.notes or "").strip()
    for name_, label in (("email", "邮箱"), ("wechat", "微信")):
        raw = clean(getattr(d, name_))
        if name_ in flagged and raw:
            # What was typed is kept where a rep will see it (the field itself stays empty).
            notes = f"{notes}\n{label}: {raw}".strip()
    return SimpleNamespace(
        id=None, name=name, name_key=p.keys.name_key, kind=p.kind, lifecycle=Lifecycle.LEAD,
        contact_name=clean(d.contact_name), job_title=clean(d.job_title), job_level=clean(d.job_level),
        phone=clean(d.phone), phone_key=p.keys.phone_key,
        email=normalize.email_clean(d.email) if p.keys.email_key else None, email_key=p.keys.email_key,
        wechat=clean(d.wechat) if p.keys.wechat_key else None, wechat_key=p.keys.wechat_key,
        address=clean(d.address),
        region=clean(d.region), industry=clean(d.industry), company_size=p.company_size,
        notes=notes or None, source=source, channel=clean(d.channel),
        campaign=clean(d.campaign), utm=dict(d.utm or {}), arrived_at=arrived, score=0, grade="C",
        score_breakdown={}, scored_at=None, win_probability=None, is_hot=False, stage_id=stage_id,
        last_stage_change_at=now if stage_id else None, owner_id=None, pool_id=pool.id, holding_no=0,
        holding_followups=0, senior_only=False, extension_days=0, pool_entered_at=now, created_at=now,
        updated_at=now,
    )  # fmt: skip


_CUSTOMERS = Customer.__table__


class _Texts:
    """Translated labels for one intake call: each looked up once (not once per row of a 10,000-row
    import), and only when used (most API calls need none of the duplicate labels)."""

    def __init__(self, source: str):
        self._source = source
        self._titles: dict[str, tuple[str, str]] = {}

    @cached_property
    def source(self) -> str:
        return _(SOURCE_LABELS[self._source])

    @cached_property
    def how(self) -> dict[str, str]:
        return {"phone": _("电话"), "email": _("邮箱"), "wechat": _("微信")}

    @cached_property
    def via_contact(self) -> str:
        return _("(联系人)")

    @cached_property
    def attached(self) -> str:
        return _("已归入现有客户")

    def title_reason(self, matched_on: str, via_contact: bool) -> tuple[str, str]:
        key = f"{matched_on}:{via_contact}"
        if key not in self._titles:
            how = self.how[matched_on] + (self.via_contact if via_contact else "")
            self._titles[key] = (
                _("重复线索 (%(source)s,%(how)s相同)", source=self.source, how=how),
                _("撞单: %(how)s相同", how=how),
            )
        return self._titles[key]


def _attach(
    session: Session,
    p: Prepared,
    match,
    source: str,
    now: datetime,
    actor: User | None,
    batch: ImportBatch | None,
    texts: _Texts,
) -> Outcome:
    """撞单: record the incoming lead on the existing customer's timeline and ledger. (Pool customers are
    bumped by the caller in one statement for the whole call.)"""
    title, reason = texts.title_reason(match.matched_on, match.via_contact)
    data = p.data.public() | {"source": source, "matched_on": match.matched_on,
                               "batch_id": batch.id if batch else None, "row": p.data.row}  # fmt: skip
    session.add(
        Activity(
            customer_id=match.customer_id,
            kind="duplicate",
            at=now,
            user_id=actor.id if actor else None,
            title=title,
            body=_summary(p.data),
            data=data,
        )  # fmt: skip
    )
    record_event(
        session, match.customer_id, EventKind.DUPLICATE, now, actor=actor,
        actor_system=None if actor else f"intake:{source}", pool_id=match.pool_id,
        reason=reason, result=texts.attached,
        data={"source": source, "matched_on": match.matched_on, "channel": p.data.channel or None,
              "campaign": p.data.campaign or None, "batch_id": batch.id if batch else None},
    )  # fmt: skip
    return Outcome(
        status="duplicate", customer_id=match.customer_id, matched_on=match.matched_on,
        owner_id=match.owner_id, pool_id=match.pool_id, row=p.data.row,
    )  # fmt: skip


def _fill_duplicate_scores(session: Session, outcomes: list[Outcome]) -> None:
    """A duplicate's answer carries the existing customer's score and grade (one read for the call)."""
    ids = sorted({o.customer_id for o in outcomes if o.status == "duplicate" and o.score is None})
    if not ids:
        return
    found = {}
    for i in range(0, len(ids), 500):
        rows = session.execute(
            select(Customer.id, Customer.score, Customer.grade).where(Customer.id.in_(ids[i : i + 500]))
        ).all()
        found.update({r.id: (r.score, r.grade) for r in rows})
    for outcome in outcomes:
        if outcome.status == "duplicate" and outcome.score is None and outcome.customer_id in found:
            outcome.score, outcome.grade = found[outcome.customer_id]


def _bump(session: Session, customer_ids: list[int], now: datetime) -> None:
    """Pool customers asked about again are fresh leads: their arrival time moves up the board."""
    for i in range(0, len(customer_ids), 500):
        session.execute(
            update(Customer)
            .where(Customer.id.in_(customer_ids[i : i + 500]), Customer.owner_id.is_(None))
            .values(arrived_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def _summary(d: LeadData) -> str:
    parts = [d.name, d.contact_name, d.phone, d.email, d.wechat and f"微信 {d.wechat}", d.channel, d.campaign]
    text_ = " · ".join(str(x).strip() for x in parts if x and str(x).strip())
    if d.notes and d.notes.strip():
        text_ += "\n" + d.notes.strip()[:500]
    return text_


def _notify_duplicates(
    session: Session,
    by_owner: dict[int, list[str]],
    outcomes: list[Outcome],
    source: str,
    now: datetime,
    batch: ImportBatch | None,
) -> None:
    """The owner hears of each 撞单 — one summary per owner for an import, not one per row."""
    if batch is not None:
        for owner_id, names in by_owner.items():
            shown = "、".join(names[:10]) + (_(" 等") if len(names) > 10 else "")
            notify(
                session, user_id=owner_id, kind=ReminderKind.DUPLICATE,
                title=_("导入批次 #%(id)s 中有 %(n)s 条线索与你的客户重复", id=batch.id, n=len(names)),
                body=shown, unique_key=f"dup-batch:{batch.id}:{owner_id}" + (f":{batch.rows_done}" if batch.rows_done else ""),
                due_at=now, now=now,
            )  # fmt: skip
        return
    stamp = now.strftime("%Y%m%d%H%M%S%f")
    for outcome in outcomes:
        if outcome.status == "duplicate" and outcome.owner_id is not None:
            name = session.scalar(select(Customer.name).where(Customer.id == outcome.customer_id))
            notify(
                session, user_id=outcome.owner_id, kind=ReminderKind.DUPLICATE,
                title=_("撞单提醒: %(name)s 又来了一条线索 (%(source)s)", name=name,
                        source=_(SOURCE_LABELS[source])),
                unique_key=f"dup:{outcome.customer_id}:{stamp}", due_at=now, now=now,
                customer_id=outcome.customer_id,
            )  # fmt: skip


def _open_conflicts(
    session: Session,
    created: list[tuple[int, SimpleNamespace]],
    outcomes: list[Outcome],
    threshold: float,
    now: datetime,
    *,
    exclude: set[int],
    below: int | None = None,
    decided: set[tuple[int, int]] | None = None,
) -> int:
    """Possible duplicates (similar company names) go to the conflict queue. ``exclude``: this call's
    own leads; ``decided``: pairs already in the queue (either way round) are not asked again. Returns
    the conflicts opened."""
    companies = [(i, c) for i, c in created if c.kind == CustomerKind.COMPANY and len(c.name_key) >= 2]
    if not companies:
        return 0
    results = fuzzy_matches(
        session, [c.name_key for _i, c in companies], threshold,
        exclude=[exclude for _c in companies], below=below,
    )  # fmt: skip
    # The batch against itself: a later lead similar to an earlier one of the same call is a conflict too.
    within = batch_fuzzy([c.name_key for _i, c in companies], threshold)
    for position, earlier in enumerate(within):
        have = {cid for cid, _s in results[position]}
        extra = [(companies[j][1].id, score) for j, score in earlier if companies[j][1].id not in have]
        if extra:
            results[position] = sorted(results[position] + extra, key=lambda x: (-x[1], -x[0]))[:3]
    decided = decided or set()
    results = [
        [(cid, score) for cid, score in found if (c.id, cid) not in decided and (cid, c.id) not in decided]
        for (_i, c), found in zip(companies, results, strict=True)
    ]
    names = {}
    wanted = {cid for found in results for cid, _s in found}
    if wanted:
        names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(wanted))).all())
    opened = 0
    for (index, customer), found in zip(companies, results, strict=True):
        for candidate_id, score in found:
            opened += 1
            session.add(
                DuplicateConflict(
                    customer_id=customer.id,
                    candidate_id=candidate_id,
                    similarity=score,
                    reason=_(
                        "公司名称相似 (%(score)s%%): %(a)s ≈ %(b)s",
                        score=f"{score:.0f}",
                        a=customer.name,
                        b=names.get(candidate_id, ""),
                    ),
                    status="open",
                    created_at=now,
                )  # fmt: skip
            )
            if index is not None:
                outcomes[index].conflicts.append((candidate_id, score))
    session.flush()
    return opened


def _deferrable(
    pool: Pool, created: list[tuple[int, SimpleNamespace]], score_cfg: dict, route: bool
) -> list[SimpleNamespace]:
    """New company leads whose possible-duplicate check routing does not wait for (see ``intake``)."""
    routable = route and pool.auto_assign_strategy != AssignStrategy.NONE
    return [
        c
        for _i, c in created
        if c.kind == CustomerKind.COMPANY
        and len(c.name_key) >= 2
        and not (routable and c.score >= score_cfg["routing_threshold"])
    ]


# The rq job that runs deferred checks (``workers.jobs.check_possible_duplicates``; named, not imported:
# the app does not import the workers).
DEFERRED_CHECK = "workers.jobs.check_possible_duplicates"


def _check_later(session: Session, ids: list[int], outcomes: list[Outcome], now: datetime) -> None:
    """The checks of ``ids`` are pending (written with the leads): make sure the job runs soon (a nudge, at
    most one Redis round trip a second per process); Redis unreachable: run them now."""
    from crm.queues import nudge

    if nudge(DEFERRED_CHECK):
        for outcome in outcomes:
            outcome.duplicate_check = "queued"
        return
    found = check_possible_duplicates(session, ids, now)
    session.commit()
    for outcome in outcomes:
        outcome.conflicts = found.get(outcome.customer_id, [])


_PENDING = PendingDuplicateCheck.__table__
# A few whole groups, claimed by deleting their rows; PostgreSQL skips groups another drain holds (each
# group's first lead carries the group's id, so its row stands for the group).
_CLAIM_PENDING = (
    delete(_PENDING)
    .where(
        _PENDING.c.group_id.in_(
            select(_PENDING.c.group_id)
            .where(_PENDING.c.customer_id == _PENDING.c.group_id)
            .order_by(_PENDING.c.group_id)
            .limit(bindparam("groups"))
            .with_for_update(skip_locked=True)
        )
    )
    .returning(_PENDING.c.customer_id, _PENDING.c.group_id)
)


def drain_pending_checks(session: Session, now: datetime, groups: int = 50) -> int:
    """Run the pending possible-duplicate checks (``PendingDuplicateCheck``), ``groups`` intake calls per
    transaction, until none are left; for the rq job. A group's rows are deleted in the transaction that
    checks it, so a failure leaves them for the next drain, and two drains never check the same group.
    Returns the conflicts opened."""
    opened = 0
    while rows := session.execute(_CLAIM_PENDING, {"groups": groups}).all():
        by_group: dict[int, list[int]] = defaultdict(list)
        for customer_id, group_id in rows:
            by_group[group_id].append(customer_id)
        for ids in by_group.values():
            opened += sum(len(pairs) for pairs in _check_group(session, sorted(ids), now).values())
        session.commit()
    session.commit()
    return opened


def check_possible_duplicates(
    session: Session, customer_ids: list[int], now: datetime
) -> dict[int, list[tuple[int, float]]]:
    """The possible-duplicate check of leads taken in together (``intake(defer_fuzzy=True)``), run later by
    an rq job. Idempotent: it compares each lead only with customers older than the group (what the check
    at intake would have seen; newer leads compared themselves with these) and skips pairs already in the
    conflict queue, so a retried or repeated job opens nothing twice. Merged leads are skipped. Their
    pending rows are dropped. Does not commit. Returns the conflicts opened per lead."""
    ids = sorted(set(customer_ids))
    if ids:
        session.execute(delete(_PENDING).where(_PENDING.c.customer_id.in_(ids)))
    return _check_group(session, ids, now)


def _check_group(session: Session, ids: list[int], now: datetime) -> dict[int, list[tuple[int, float]]]:
    """``check_possible_duplicates`` of sorted ``ids`` whose pending rows are already gone (the drain
    claimed them)."""
    if not ids:
        return {}
    rows = session.execute(
        select(Customer.id, Customer.name, Customer.name_key, Customer.kind).where(
            Customer.id.in_(ids), Customer.merged_into_id.is_(None)
        )
    ).all()
    leads = [
        (None, SimpleNamespace(id=r.id, name=r.name, name_key=r.name_key or "", kind=r.kind)) for r in rows
    ]
    if not leads:
        return {}
    decided = set(
        session.execute(
            select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id).where(
                or_(DuplicateConflict.customer_id.in_(ids), DuplicateConflict.candidate_id.in_(ids))
            )
        ).all()
    )
    before = {(a, b) for a, b in decided}
    _open_conflicts(
        session, leads, [], config.get(session)["fuzzy_threshold"], now,
        exclude=set(ids), below=ids[0], decided=decided,
    )  # fmt: skip
    opened: dict[int, list[tuple[int, float]]] = {}
    for conflict in session.scalars(
        select(DuplicateConflict)
        .where(DuplicateConflict.customer_id.in_(ids))
        .order_by(DuplicateConflict.similarity.desc(), DuplicateConflict.candidate_id.desc())
    ):
        if (conflict.customer_id, conflict.candidate_id) not in before:
            opened.setdefault(conflict.customer_id, []).append((conflict.candidate_id, conflict.similarity))
    return opened


def _routable(pool: Pool, created: list[Outcome], score_cfg: dict) -> list[Outcome]:
    """Routing by score: new leads at or above the threshold, with no possible duplicate pending, go to a
    rep by the pool's strategy (pools without a strategy keep them)."""
    if pool.auto_assign_strategy == AssignStrategy.NONE:
        return []
    threshold = score_cfg["routing_threshold"]
    return [o for o in created if o.score is not None and o.score >= threshold and not o.conflicts]


def route_after_conflict(session: Session, customer_id: int, now: datetime) -> User | None:
    """A lead held back by a possible duplicate that turned out distinct is routed like any new lead."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.owner_id is not None or customer.merged_into_id is not None:
        return None
    if customer.score < scoring_config.get(session)["routing_threshold"]:
        return None
    open_left = session.scalar(
        select(func.count())
        .select_from(DuplicateConflict)
        .where(DuplicateConflict.customer_id == customer_id, DuplicateConflict.status == "open")
    )
    if open_left:
        return None
    return auto_assign(session, customer_id, now)
