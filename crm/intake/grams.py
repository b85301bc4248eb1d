"""Name grams (blocking keys for the fuzzy company check) and the normalised keys, kept in sync.

An ORM ``before_flush`` hook recomputes ``name_key`` / ``phone_key`` / ``email_key`` / ``wechat_key`` of
customers and contacts whose raw fields changed (unless the same flush sets the key explicitly), and an
``after_flush`` hook rewrites the ``NameGram`` rows of customers whose ``name_key`` changed (create,
rename) and drops them for deleted customers — so every feature's edits keep the keys right without
calling intake. Set-based writers (the bench loader, merge) call ``write_grams`` / ``drop_grams``.
``NameGramStat`` counts are bumped here and recomputed nightly by ``refresh_stats``.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import bindparam, delete, event, func, insert, inspect, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from crm.intake import normalize
from crm.models import Contact, Customer, NameGram
from crm.models.intake import NameGramStat

_KEY_SOURCES = {
    "name_key": ("name", normalize.name_key),
    "phone_key": ("phone", normalize.phone_key),
    "email_key": ("email", normalize.email_key),
    "wechat_key": ("wechat", normalize.wechat_key),
}


def _dialect(session_or_conn) -> str:
    """Works for a Connection (flush hooks), a Session and Flask-SQLAlchemy's scoped session."""
    dialect = getattr(session_or_conn, "dialect", None)
    if dialect is None:
        dialect = session_or_conn.get_bind().dialect
    return dialect.name


_PG_GRAMS = text(
    "INSERT INTO name_grams (gram, customer_id) SELECT * FROM unnest(CAST(:grams AS varchar[]), CAST(:ids AS integer[]))"
)
_PG_GRAMS_AND_STATS = text(
    "WITH g AS (INSERT INTO name_grams (gram, customer_id) "
    "SELECT * FROM unnest(CAST(:grams AS varchar[]), CAST(:ids AS integer[]))) "
    "INSERT INTO name_gram_stats (gram, n) SELECT * FROM unnest(CAST(:sgrams AS varchar[]), CAST(:ns AS integer[])) "
    "ON CONFLICT (gram) DO UPDATE SET n = name_gram_stats.n + excluded.n"
)
_PG_STATS = text(
    "INSERT INTO name_gram_stats (gram, n) SELECT * FROM unnest(CAST(:sgrams AS varchar[]), CAST(:ns AS integer[])) "
    "ON CONFLICT (gram) DO UPDATE SET n = name_gram_stats.n + excluded.n"
)


# ---------------------------------------------------------------- gram counts, cached per process

_COUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine → gram → (read at, customers)
COUNTS_SECONDS = 60
_COUNTS_SQL = text("SELECT gram, n FROM name_gram_stats WHERE gram IN :grams").bindparams(
    bindparam("grams", expanding=True)
)


def _engine(session_or_conn):
    """The engine of a Connection (flush hooks) or a session: counts are kept per engine."""
    if hasattr(session_or_conn, "dialect") and hasattr(session_or_conn, "engine"):
        return session_or_conn.engine
    return session_or_conn.get_bind()


def gram_counts(session, grams: list[str]) -> dict[str, int]:
    """How many customers carry each gram. The fuzzy check only orders grams by it (rarest first, and
    leaves the crowded ones out), so counts are kept in memory: this process's own writes adjust them at
    once (``_adjust``), other processes' writes are seen after ``COUNTS_SECONDS``."""
    cache = _COUNTS.setdefault(_engine(session), {})
    if len(cache) > 200_000:
        cache.clear()
    now = time.monotonic()
    out: dict[str, int] = {}
    missing = []
    for gram in grams:
        hit = cache.get(gram)
        if hit is not None and now - hit[0] < COUNTS_SECONDS:
            out[gram] = hit[1]
        else:
            missing.append(gram)
    for i in range(0, len(missing), 500):
        chunk = missing[i : i + 500]
        found = dict(session.execute(_COUNTS_SQL, {"grams": chunk}).all())
        for gram in chunk:
            out[gram] = found.get(gram, 0)
            cache[gram] = (now, out[gram])
    return out


def _adjust(session_or_conn, counts: Counter, sign: int) -> None:
    """Apply this process's own gram writes to the cached counts (a lead's grams must not look rare to
    the next lead just because the cache was read before it was written)."""
    cache = _COUNTS.get(_engine(session_or_conn))
    if not cache:
        return
    for gram, n in counts.items():
        hit = cache.get(gram)
        if hit is not None:
            cache[gram] = (hit[0], max(0, hit[1] + sign * n))


def forget_counts() -> None:
    """Drop every cached count (after a set-based rewrite of the statistics)."""
    _COUNTS.clear()


def _bump_stats(session_or_conn, counts: Counter) -> None:
    """Add ``counts`` to the gram statistics (sorted, so concurrent writers lock rows in one order)."""
    if not counts:
        return
    _adjust(session_or_conn, counts, 1)
    if _dialect(session_or_conn) == "postgresql":
        session_or_conn.execute(_PG_STATS, _stats_params(counts))
        return
    ordered = sorted(counts.items())
    stmt = sqlite.insert(NameGramStat.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["gram"], set_={"n": NameGramStat.__table__.c.n + stmt.excluded.n}
    )
    session_or_conn.execute(stmt, [{"gram": g, "n": n} for g, n in ordered])


def gram_rows(pairs: Iterable[tuple[int | None, str]]) -> tuple[list[str], list[int | None], Counter]:
    """The gram rows of (customer_id, name_key) pairs: grams, their customer ids, and each gram's count."""
    grams: list[str] = []
    ids: list[int | None] = []
    counts: Counter = Counter()
    for customer_id, key in pairs:
        for gram in normalize.name_grams(key):
            grams.append(gram)
            ids.append(customer_id)
            counts[gram] += 1
    return grams, ids, counts


def _stats_params(counts: Counter) -> dict[str, list]:
    """Bind values of a PostgreSQL statistics upsert (sorted, so concurrent writers lock rows in one order)."""
    ordered = sorted(counts.items())
    return {"sgrams": [g for g, _n in ordered], "ns": [n for _g, n in ordered]}


def counted(session_or_conn, counts: Counter) -> None:
    """Grams and statistics written by a statement of the caller's own (``intake.inserts``): keep this
    process's cached counts in step, as ``write_grams`` does."""
    _adjust(session_or_conn, counts, 1)


def write_grams(session, pairs: Iterable[tuple[int, str]]) -> int:
    """Insert the grams of (customer_id, name_key) pairs whose customers have none yet. Returns rows.

    PostgreSQL gets one ``INSERT … SELECT unnest(…)`` (an import writes ~70,000 grams), SQLite an
    executemany (already a tight C loop there)."""
    grams, ids, counts = gram_rows(pairs)
    if grams:
        if _dialect(session) == "postgresql" and len(grams) <= 50_000:
            # Grams and their counts in one statement.
            session.execute(_PG_GRAMS_AND_STATS, {"grams": grams, "ids": ids, **_stats_params(counts)})
            _adjust(session, counts, 1)
            return len(grams)
        if _dialect(session) == "postgresql":
            for i in range(0, len(grams), 50_000):
                session.execute(_PG_GRAMS, {"grams": grams[i : i + 50_000], "ids": ids[i : i + 50_000]})
        else:
            session.execute(
                insert(NameGram.__table__),
                [{"gram": g, "customer_id": c} for g, c in zip(grams, ids, strict=True)],
            )
        _bump_stats(session, counts)
    return len(grams)


def drop_grams(session, customer_ids: Iterable[int]) -> None:
    """Remove the grams of these customers (merge losers, deletions, renames)."""
    ids = list(customer_ids)
    if not ids:
        return
    table = NameGram.__table__
    stats = NameGramStat.__table__
    old = Counter(
        g for (g,) in session.execute(select(table.c.gram).where(table.c.customer_id.in_(ids))).all()
    )
    session.execute(delete(table).where(table.c.customer_id.in_(ids)))
    if old:
        _adjust(session, old, -1)
        session.execute(
            update(stats).where(stats.c.gram == bindparam("b_gram")).values(n=stats.c.n - bindparam("b_n")),
            [{"b_gram": g, "b_n": n} for g, n in sorted(old.items())],
        )


def refresh_stats(session: Session) -> int:
    """Recompute every gram's count from ``name_grams`` (set-based; the nightly job). Returns grams."""
    stats = NameGramStat.__table__
    grams = NameGram.__table__
    session.execute(delete(stats))
    forget_counts()
    session.execute(
        insert(stats).from_select(["gram", "n"], select(grams.c.gram, func.count()).group_by(grams.c.gram))
    )
    return session.scalar(select(func.count()).select_from(stats)) or 0


# ---------------------------------------------------------------- ORM hooks


def _changed(obj, attr: str) -> bool:
    return inspect(obj).attrs[attr].history.has_changes()


def _sync_keys(obj, is_new: bool) -> None:
    for key_attr, (raw_attr, fn) in _KEY_SOURCES.items():
        if not hasattr(obj, key_attr):
            continue
        raw = getattr(obj, raw_attr, None)
        if is_new:
            # The raw field decides (a key typed by hand could disagree with it); no raw value, keep the key.
            if raw not in (None, ""):
                value = fn(raw)
                setattr(obj, key_attr, value if value or key_attr != "name_key" else "")
        elif _changed(obj, raw_attr) and not _changed(obj, key_attr):
            value = fn(raw)
            setattr(obj, key_attr, value if value or key_attr != "name_key" else "")


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context, instances) -> None:
    renamed = session.info.setdefault("intake_renamed", set())
    for obj in session.new:
        if isinstance(obj, Customer | Contact):
            _sync_keys(obj, True)
    for obj in session.dirty:
        if isinstance(obj, Customer | Contact):
            _sync_keys(obj, False)
            if isinstance(obj, Customer) and obj.id is not None and _changed(obj, "name_key"):
                renamed.add(obj.id)
    deleted = [obj.id for obj in session.deleted if isinstance(obj, Customer) and obj.id is not None]
    if deleted:
        drop_grams(session.connection(), deleted)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context) -> None:
    renamed = session.info.pop("intake_renamed", set())
    pairs = []
    for obj in session.new:
        if isinstance(obj, Customer) and obj.id is not None and obj.name_key:
            pairs.append((obj.id, obj.name_key))
    conn = session.connection()
    if renamed:
        drop_grams(conn, renamed)
        for obj in session.identity_map.values():
            if isinstance(obj, Customer) and obj.id in renamed and obj.name_key:
                pairs.append((obj.id, obj.name_key))
    if pairs:
        write_grams(conn, pairs)


# ---------------------------------------------------------------- recomputing stored keys

_CUSTOMERS = Customer.__table__
_CONTACTS = Contact.__table__


def recompute_keys(session_or_conn, chunk: int = 2000) -> int:
    """Rewrite the stored name and email keys (and clean stored emails) after their rules changed — the
    OpenCC fold of company names, the email clean-up. Set-based per chunk: only rows whose values differ
    are updated, and renamed customers get new grams. Works on a Session or a Connection (the migration).
    Idempotent. Returns the rows changed."""
    changed = 0
    for table, with_name in ((_CUSTOMERS, True), (_CONTACTS, False)):
        cols = [table.c.id, table.c.email, table.c.email_key]
        if with_name:
            cols += [table.c.name, table.c.name_key]
        last = 0
        while True:
            rows = session_or_conn.execute(
                select(*cols).where(table.c.id > last).order_by(table.c.id).limit(chunk)
            ).all()
            if not rows:
                break
            last = rows[-1].id
            updates, renamed = [], []
            for row in rows:
                values = {}
                if row.email:
                    clean = normalize.email_clean(row.email)
                    key = normalize.email_key(row.email) if normalize.email_valid(row.email) else None
                    if clean and clean != row.email and key:
                        values["email"] = clean
                    if key and key != row.email_key:
                        values["email_key"] = key
                if with_name and row.name:
                    name_key = normalize.name_key(row.name)
                    if name_key and name_key != row.name_key:
                        values["name_key"] = name_key
                        renamed.append((row.id, name_key))
                if values:
                    updates.append((row, values))
            for row, values in updates:
                session_or_conn.execute(update(table).where(table.c.id == row.id).values(**values))
            if renamed:
                drop_grams(session_or_conn, [cid for cid, _k in renamed])
                write_grams(session_or_conn, renamed)
            changed += len(updates)
    return changed
