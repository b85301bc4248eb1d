"""Scoring services: recompute scores in batches, flag hot crossings once, nightly decay.

- ``recompute(session, ids, now)``: the customers' scores from their current facts (a few aggregate
  queries per chunk of ids, never one query per customer); writes only rows that changed.
- ``recompute_all(session, now)``: the nightly pass over every customer (keyset chunks), for decay.
- ``update_hot_flags(session, now, ids=None)``: ``is_hot`` flips with a conditional update; each flip to
  hot notifies the owner, or the pool's admins (else the admins) when unowned — once per crossing, because
  only the statement that flips the flag sees the row.
Nothing here commits: callers own the transaction (the nightly job commits per chunk).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import Float, Text, bindparam, case, cast, func, select, text, update
from sqlalchemy.orm import Session

from crm import signals
from crm.models import (
    BehaviorEvent,
    Customer,
    FollowUp,
    Opportunity,
    PoolAdmin,
    ReminderKind,
    Role,
    User,
)
from crm.notify import notify
from crm.scoring import bayes, config
from crm.scoring.model import (
    SECONDS_PER_DAY,
    Facts,
    assemble,
    breakdown,
    grade_for,
    profile_lines,
    round_points,
)

CHUNK = 20000
# Behaviour older than this many half-lives adds less than 0.1 % of its weight: not loaded.
HALF_LIVES_KEPT = 10


@dataclass
class Scored:
    customer_id: int
    score: int
    grade: str
    breakdown: dict
    win_probability: float | None
    old_score: int
    changed: bool


_T = Customer.__table__
# Core columns (not ORM attributes): a million rows are read as plain tuples.
# The stored breakdown is compared by its digest, extracted by the database (JSON1 / ->>), not decoded.
_CUSTOMER_COLUMNS = (
    _T.c.id, _T.c.company_size, _T.c.industry, _T.c.job_level, _T.c.region, _T.c.channel,
    _T.c.phone_key.is_not(None).label("has_phone"), _T.c.email_key.is_not(None).label("has_email"),
    _T.c.wechat_key.is_not(None).label("has_wechat"), _T.c.score, _T.c.grade, _T.c.win_probability,
    _T.c.score_breakdown["h"].as_string().label("doc_hash"),
)  # fmt: skip
_PROFILE = slice(1, 9)  # company_size … has_wechat: what the profile lines depend on


def _events_since(cfg: dict, now: datetime) -> datetime:
    longest = max(float(spec["half_life_days"]) for spec in cfg["events"].values())
    return now - timedelta(days=min(3650.0, longest * HALF_LIVES_KEPT))


class _Scorer:
    """Scores rows for one pass. Documents are memoised on everything they depend on — the profile fields,
    each behaviour type's count and decayed points, follow-ups, goals met and won deals — so a million
    customers cost a few dictionary look-ups each; only new combinations are assembled."""

    def __init__(self, cfg: dict, model: bayes.WinModel | None, now: datetime):
        self.cfg, self.model, self.now = cfg, model, now
        self.profiles: dict[tuple, list[dict]] = {}
        self.docs: dict[tuple, tuple[dict, str]] = {}
        self.wins: dict[tuple, float | None] = {}

    def score(
        self, r, behaviour: tuple, followups: int, goals_met: int, won: int
    ) -> tuple[dict, str, float | None]:
        """(breakdown, grade, win probability) of one row; ``behaviour`` is ((type, count, points), …)."""
        key = tuple(r[_PROFILE])
        doc_key = (key, behaviour, followups, goals_met, won)
        found = self.docs.get(doc_key)
        if found is None:
            profile = self.profiles.get(key)
            if profile is None:
                profile = self.profiles[key] = profile_lines(self.cfg, Facts(*key))
            doc = assemble(self.cfg, profile + self._dynamic(behaviour, followups, goals_met, won))
            found = self.docs[doc_key] = (doc, grade_for(self.cfg, doc["total"]))
        return found[0], found[1], self.win(key)

    def _dynamic(self, behaviour: tuple, followups: int, goals_met: int, won: int) -> list[dict]:
        cfg = self.cfg
        lines = [{"d": "behaviour", "f": k, "v": n, "p": p} for k, n, p in behaviour if p]
        for dim, factor, n, each in (
            ("interaction", "followups", followups, cfg["followup_points"]),
            ("interaction", "goals_met", goals_met, cfg["goal_met_points"]),
            ("deals", "won", won, cfg["won_deal_points"]),
        ):
            if n and each:
                lines.append({"d": dim, "f": factor, "v": n, "p": n * int(each)})
        return lines

    def win(self, key: tuple) -> float | None:
        if self.model is None or not self.cfg["win_probability"]:
            return None
        if key not in self.wins:
            size, industry, level, region, channel = key[:5]
            features = bayes.features_of(industry, region, level, size, channel)
            self.wins[key] = round(self.model.probability(features), 4)
        return self.wins[key]


def _dynamic_facts(session: Session, cfg: dict, now: datetime, id_filter, fresh: bool):
    """Behaviour events, follow-up counts and won deals of a chunk: three aggregate queries."""
    # Behaviour per customer and type: (count, decayed points), decayed as the rows stream in. Times come
    # back as epoch seconds of the stored naive UTC (no datetime object per row).
    if session.get_bind().dialect.name == "postgresql":
        epoch = func.extract("epoch", BehaviorEvent.__table__.c.at)
    else:
        epoch = cast(func.strftime("%s", BehaviorEvent.__table__.c.at), Float)
    specs = {
        k: (float(v["weight"]), float(v["half_life_days"]) * SECONDS_PER_DAY)
        for k, v in cfg["events"].items()
    }
    now_ts = now.timestamp()
    sums: dict[int, dict[str, list]] = {}
    for cid, kind, at in session.execute(
        select(BehaviorEvent.customer_id, BehaviorEvent.type, epoch).where(
            id_filter(BehaviorEvent.customer_id), BehaviorEvent.at >= _events_since(cfg, now)
        )
    ):
        spec = specs.get(kind)
        if spec is None:
            continue
        acc = sums.setdefault(cid, {}).setdefault(kind, [0, 0.0])
        acc[0] += 1
        # the same expression as model.decayed, so both paths round alike
        acc[1] += spec[0] * 0.5 ** (max(0.0, now_ts - float(at)) / spec[1])
    order = list(cfg["events"])
    events = {
        cid: tuple((k, per[k][0], round_points(per[k][1])) for k in order if k in per)
        for cid, per in sums.items()
    }
    followups: dict[int, tuple[int, int]] = {}
    won: dict[int, int] = {}
    if fresh:
        return events, followups, won
    since = now - timedelta(days=int(cfg["interaction_days"]))
    for cid, n, met in session.execute(
        select(
            FollowUp.customer_id,
            func.count(),
            func.coalesce(func.sum(case((FollowUp.goal_met.is_(True), 1), else_=0)), 0),
        )
        .where(id_filter(FollowUp.customer_id), FollowUp.at >= since, FollowUp.at <= now)
        .where(FollowUp.is_fake.is_(False))
        .group_by(FollowUp.customer_id)
    ):
        followups[cid] = (int(n), int(met))
    for cid, n in session.execute(
        select(Opportunity.customer_id, func.count())
        .where(id_filter(Opportunity.customer_id), Opportunity.status == "won")
        .group_by(Opportunity.customer_id)
    ):
        won[cid] = int(n)
    return events, followups, won


def _score_rows(
    session: Session,
    rows: list,
    scorer: _Scorer,
    id_filter,
    *,
    fresh: bool = False,
    keep_all: bool = True,
) -> list[Scored]:
    """Score the rows; all of them with ``keep_all``, else only those whose stored score must change."""
    events, followups, won = _dynamic_facts(session, scorer.cfg, scorer.now, id_filter, fresh)
    out = []
    no_followups = (0, 0)
    for r in rows:
        cid = r.id
        n, met = followups.get(cid, no_followups)
        doc, grade, win = scorer.score(r, events.get(cid, ()), n, met, won.get(cid, 0))
        score = doc["total"]
        changed = score != r.score or grade != r.grade or win != r.win_probability or doc["h"] != r.doc_hash
        if changed or keep_all:
            out.append(Scored(cid, score, grade, doc, win, r.score, changed))
    return out


_JSON_TEXT: dict[int, tuple[dict, str]] = {}


def _json_text(doc: dict) -> str:
    """The stored JSON of a breakdown; memoised per document object (the scorer shares them)."""
    hit = _JSON_TEXT.get(id(doc))
    if hit is None or hit[0] is not doc:
        if len(_JSON_TEXT) > 200_000:
            _JSON_TEXT.clear()
        hit = _JSON_TEXT[id(doc)] = (doc, json.dumps(doc))
    return hit[1]


_PG_WRITE = text(
    """
    UPDATE customers AS c
       SET score = v.score, grade = v.grade, score_breakdown = CAST(v.doc AS jsonb), win_probability = v.win,
           scored_at = :now
      FROM unnest(CAST(:ids AS integer[]), CAST(:scores AS integer[]), CAST(:grades AS varchar[]),
                  CAST(:docs AS text[]), CAST(:wins AS float8[])) AS v(id, score, grade, doc, win)
     WHERE c.id = v.id
    """
)


def _write(session: Session, scored: list[Scored], now: datetime) -> int:
    """Write the changed scores of a chunk: one ``UPDATE … FROM unnest(…)`` on PostgreSQL, one
    executemany on SQLite; the breakdown JSON is serialised once per distinct document."""
    changed = [s for s in scored if s.changed]
    if not changed:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _PG_WRITE,
            {
                "now": now.astimezone(UTC).replace(tzinfo=None),
                "ids": [s.customer_id for s in changed],
                "scores": [s.score for s in changed],
                "grades": [s.grade for s in changed],
                "docs": [_json_text(s.breakdown) for s in changed],
                "wins": [s.win_probability for s in changed],
            },
        )
        return len(changed)
    table = Customer.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            score=bindparam("b_score"),
            grade=bindparam("b_grade"),
            score_breakdown=bindparam("b_doc", type_=Text),  # already JSON text
            win_probability=bindparam("b_win"),
            scored_at=now,
        ),
        [
            {
                "b_id": s.customer_id,
                "b_score": s.score,
                "b_grade": s.grade,
                "b_doc": _json_text(s.breakdown),
                "b_win": s.win_probability,
            }
            for s in changed
        ],  # fmt: skip
    )
    return len(changed)


def _announce(session: Session, scored: list[Scored], now: datetime) -> None:
    """``score_changed`` for moved scores (only loads the customers when someone listens)."""
    moved = {s.customer_id: s for s in scored if s.changed and s.score != s.old_score}
    if not moved or not bool(signals.score_changed.receivers):
        return
    ids = list(moved)
    for i in range(0, len(ids), 500):
        for customer in session.scalars(select(Customer).where(Customer.id.in_(ids[i : i + 500]))):
            s = moved[customer.id]
            signals.score_changed.send(customer, session=session, old=s.old_score, new=s.score, now=now)


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def recompute(
    session: Session,
    customer_ids: Iterable[int],
    now: datetime,
    *,
    crossings: bool = True,
    cfg: dict | None = None,
    fresh: bool = False,
) -> dict[int, Scored]:
    """Score these customers now; with ``crossings`` also flip hot flags and notify. Does not commit.

    ``fresh`` says the customers were created in this transaction (intake): they can have no follow-ups or
    deals yet, so only their behaviour events are looked up.
    """
    ids = sorted({int(i) for i in customer_ids if i})
    if not ids:
        return {}
    session.flush()
    cfg = cfg or config.get(session)
    model = bayes.model(session) if cfg["win_probability"] else None
    scorer = _Scorer(cfg, model, now)
    results: dict[int, Scored] = {}
    for chunk in _chunks(ids):
        rows = session.execute(
            select(*_CUSTOMER_COLUMNS).where(_T.c.id.in_(chunk), _T.c.merged_into_id.is_(None))
        ).all()
        scored = _score_rows(session, rows, scorer, lambda col, chunk=chunk: col.in_(chunk), fresh=fresh)
        _write(session, scored, now)
        results.update({s.customer_id: s for s in scored})
        _announce(session, scored, now)
    _expire_customers(session, set(ids))
    if crossings:
        update_hot_flags(session, now, ids=ids, cfg=cfg)
    return results


def score_new(session: Session, customer: Customer, events: list[tuple[str, datetime]], now: datetime,
              cfg: dict | None = None) -> Scored:  # fmt: skip
    """Score a customer being created (not yet flushed): only its own fields and ``events`` count, so no
    query is needed. Sets score, grade, breakdown, scored_at and win probability on the object."""
    cfg = cfg or config.get(session)
    facts = Facts(
        company_size=customer.company_size, industry=customer.industry, job_level=customer.job_level,
        region=customer.region, channel=customer.channel, has_phone=bool(customer.phone_key),
        has_email=bool(customer.email_key), has_wechat=bool(customer.wechat_key), events=list(events),
    )  # fmt: skip
    doc = breakdown(cfg, facts, now)
    win_model = bayes.model(session) if cfg["win_probability"] else None
    win = None
    if win_model is not None:
        features = bayes.features_of(customer.industry, customer.region, customer.job_level,
                                     customer.company_size, customer.channel)  # fmt: skip
        win = round(win_model.probability(features), 4)
    customer.score, customer.grade = doc["total"], grade_for(cfg, doc["total"])
    customer.score_breakdown, customer.scored_at, customer.win_probability = doc, now, win
    return Scored(customer.id or 0, customer.score, customer.grade, doc, win, 0, True)


def _expire_customers(session: Session, ids: set[int]) -> None:
    """Loaded Customer objects of ``ids`` re-read their score after the Core update (by identity key, so
    already-expired objects are not loaded just to be looked at)."""
    for key, obj in list(session.identity_map.items()):
        if key[0] is Customer and key[1][0] in ids:
            session.expire(obj)


def recompute_all(
    session: Session,
    now: datetime,
    *,
    chunk_size: int = CHUNK,
    commit: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The nightly pass: every live customer in id order, ``chunk_size`` at a time (committing each chunk
    when ``commit``), then the hot flags set-based. Returns counts for the job log. ``progress(customers
    done)`` after each chunk (a background task's progress bar)."""
    cfg = config.get(session)
    model = bayes.model(session, fresh=True) if cfg["win_probability"] else None
    scorer = _Scorer(cfg, model, now)
    last_id = 0
    seen = changed = 0
    while True:
        rows = session.execute(
            select(*_CUSTOMER_COLUMNS)
            .where(_T.c.id > last_id, _T.c.merged_into_id.is_(None))
            .order_by(_T.c.id)
            .limit(chunk_size)
        ).all()
        if not rows:
            break
        lo, hi = rows[0].id, rows[-1].id
        scored = _score_rows(
            session, rows, scorer, lambda col, lo=lo, hi=hi: col.between(lo, hi), keep_all=False
        )
        changed += _write(session, scored, now)
        _announce(session, scored, now)
        seen += len(rows)
        last_id = hi
        if commit:
            session.commit()
        if progress is not None:
            progress(seen)
    crossed = update_hot_flags(session, now)
    if commit:
        session.commit()
    return {"customers": seen, "changed": changed, "crossed_hot": len(crossed)}


# ---------------------------------------------------------------- hot crossings


def update_hot_flags(
    session: Session, now: datetime, ids: list[int] | None = None, *, cfg: dict | None = None
) -> list[int]:
    """Flip ``is_hot`` to match the threshold; notify for each flip up. Returns the ids that crossed up."""
    hot = (cfg or config.get(session))["hot_threshold"]
    table = Customer.__table__
    returning = (table.c.id, table.c.is_hot, table.c.owner_id, table.c.pool_id, table.c.name, table.c.score)
    if ids is not None:
        if not ids:
            return []
        # One statement per chunk: set the flag where it disagrees with the score; RETURNING says which flipped.
        is_hot_now = table.c.score >= hot
        flipped = []
        for chunk in _chunks(sorted(ids)):
            flipped += session.execute(
                update(table)
                .where(table.c.id.in_(chunk), table.c.merged_into_id.is_(None), table.c.is_hot != is_hot_now)
                .values(is_hot=is_hot_now)
                .returning(*returning)
            ).all()
        crossed = [row for row in flipped if row.is_hot]
        _expire_customers(session, set(ids))
    else:
        crossed = session.execute(
            update(table)
            .where(table.c.is_hot.is_(False), table.c.score >= hot, table.c.merged_into_id.is_(None))
            .values(is_hot=True)
            .returning(*returning)
        ).all()
        session.execute(
            update(table).where(table.c.is_hot.is_(True), table.c.score < hot).values(is_hot=False)
        )
    notify_crossings(session, crossed, now)
    return [row.id for row in crossed]


def notify_crossings(session: Session, rows: list, now: datetime) -> None:
    """Tell the owner — or the pool's admins, else the admins — that these customers turned hot. ``rows``
    have ``id``, ``owner_id``, ``pool_id``, ``name`` and ``score``."""
    if not rows:
        return
    pool_ids = {r.pool_id for r in rows if r.owner_id is None and r.pool_id is not None}
    admins_by_pool: dict[int, list[int]] = defaultdict(list)
    if pool_ids:
        for pool_id, user_id in session.execute(
            select(PoolAdmin.pool_id, PoolAdmin.user_id)
            .join(User, User.id == PoolAdmin.user_id)
            .where(PoolAdmin.pool_id.in_(pool_ids), User.active.is_(True))
        ):
            admins_by_pool[pool_id].append(user_id)
    system_admins: list[int] | None = None
    stamp = now.strftime("%Y%m%d%H%M%S%f")
    for row in rows:
        if row.owner_id is not None:
            recipients = [row.owner_id]
        else:
            recipients = admins_by_pool.get(row.pool_id) or []
            if not recipients:
                if system_admins is None:
                    system_admins = list(
                        session.scalars(select(User.id).where(User.role == Role.ADMIN, User.active.is_(True)))
                    )
                recipients = system_admins
        for user_id in recipients:
            notify(
                session,
                user_id=user_id,
                kind=ReminderKind.HOT,
                title=_("高意向: %(name)s 评分升至 %(score)s", name=row.name, score=row.score),
                body=None if row.owner_id else _("该客户在公海中,尚无负责人,请尽快分配或领取。"),
                unique_key=f"hot:{row.id}:{stamp}:{user_id}",
                due_at=now,
                now=now,
                customer_id=row.id,
            )


# ---------------------------------------------------------------- signal receivers


def _customer_id(sender, kwargs: dict) -> int | None:
    for candidate in (kwargs.get("customer"), kwargs.get("followup"), sender):
        if isinstance(candidate, Customer):
            return candidate.id
        cid = getattr(candidate, "customer_id", None)
        if cid:
            return cid
    return None


def _rescore_one(sender, **kwargs) -> None:
    """A follow-up, its invalidation or a won deal changes one customer's interaction/deal points."""
    session, now = kwargs.get("session"), kwargs.get("now")
    cid = _customer_id(sender, kwargs)
    if session is None or now is None or cid is None:
        return
    recompute(session, [cid], now)


signals.followup_saved.connect(_rescore_one)
signals.followup_invalidated.connect(_rescore_one)
signals.deal_won.connect(_rescore_one)
