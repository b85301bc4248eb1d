"""Duplicate checks (查重) across customers and contacts.

Exact: the same phone, email or WeChat key on a live customer or one of its contacts is a duplicate.
A WeChat id that is a phone number (微信同号) is compared with phones too.

Fuzzy: a company name whose rapidfuzz similarity reaches the threshold is a possible duplicate. Blocking
keeps it fast at a million customers: the query name's bigrams are ordered rarest first (``NameGramStat``);
a match that close must share at least one of the rarest ``m`` grams (prefix filtering), so only those
grams' postings are read — each capped at ``POSTING_CAP`` newest customers for grams too common to be
useful — candidates are ranked by shared grams and the best ``CANDIDATE_CAP`` are scored.

Both checks take a batch (the import checks 10,000 rows with a handful of queries); a single lead is a
batch of one. The leads of one batch are also checked against each other (``batch_fuzzy``, in memory with
the same blocking), so a file listing …有限公司 and …有限责任公司 opens a conflict instead of two silent
creations; exact repeats within a batch are caught by intake (the later one is attached to the first).
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from sqlalchemy import Integer, Select, String, bindparam, literal_column, or_, select, text, union_all
from sqlalchemy.orm import Session

from crm.intake import grams, normalize
from crm.models import Contact, Customer, DuplicateConflict

POSTING_CAP = 400  # newest customers read per crowded gram (names made only of very common grams)
COUNTED_CAP = 2000  # grams up to this common are counted by the database; beyond, too common to tell
CANDIDATE_CAP = 300  # candidates scored per name
IN_CHUNK = 500
# The batch against itself (in memory; a 10,000-row import): newest earlier names read per gram, and scored.
BATCH_POSTING_CAP = 100
BATCH_CANDIDATE_CAP = 100
MAX_ID = 2**31 - 1  # customers.id is a 32-bit integer


@dataclass(frozen=True)
class Match:
    """An existing customer that a lead duplicates, and on which key."""

    customer_id: int
    owner_id: int | None
    pool_id: int | None
    name: str
    matched_on: str  # phone / email / wechat
    via_contact: bool


@dataclass(frozen=True)
class Keys:
    name_key: str = ""
    phone_key: str | None = None
    email_key: str | None = None
    wechat_key: str | None = None

    def lookups(self) -> list[tuple[str, str]]:
        """(namespace:key, matched_on) in priority order: phone, WeChat, email."""
        out = []
        if self.phone_key:
            out.append((f"p:{self.phone_key}", "phone"))
        if self.wechat_key:
            ns = "p" if self.wechat_key.startswith("+") else "w"
            out.append((f"{ns}:{self.wechat_key}", "wechat"))
        if self.email_key:
            out.append((f"e:{self.email_key}", "email"))
        return out


def _chunks(items: list, size: int = IN_CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def exact_matches(session: Session, keys: list[Keys]) -> list[Match | None]:
    """For each lead's keys, the existing customer it duplicates (owned ones first), or None."""
    phones = sorted({k.phone_key for k in keys if k.phone_key} | {
        k.wechat_key for k in keys if k.wechat_key and k.wechat_key.startswith("+")
    })  # fmt: skip
    wechats = sorted({k.wechat_key for k in keys if k.wechat_key and not k.wechat_key.startswith("+")})
    emails = sorted({k.email_key for k in keys if k.email_key})
    rows = []
    if phones or wechats or emails:
        for chunk in _lookup(session, phones, wechats, emails):
            rows.extend(chunk)
    return matches_in(rows, keys)


def matches_in(rows, keys: list[Keys]) -> list[Match | None]:
    """For each lead's keys, its duplicate among ``rows`` of ``KEY_ROWS`` (merged customers' rows are
    passed over): an owned customer first (its owner must hear of it), then the oldest record."""
    found: dict[str, list] = {}
    for row in rows:
        if row.merged_into_id is not None:
            continue
        for ns_key, _kind in Keys(
            phone_key=row.phone_key, email_key=row.email_key, wechat_key=row.wechat_key
        ).lookups():
            found.setdefault(ns_key, []).append(row)
    out: list[Match | None] = []
    for k in keys:
        best = None
        for ns_key, matched_on in k.lookups():
            candidates = found.get(ns_key)
            if candidates:
                row = min(candidates, key=lambda r: (r.owner_id is None, r.id))
                best = Match(row.id, row.owner_id, row.pool_id, row.name, matched_on, bool(row.via_contact))
                break
        out.append(best)
    return out


def key_rows(phones, wechats, emails) -> Select:
    """The exact look-up in one statement: rows (id, owner, pool, name, keys, merged into, via_contact) of
    the customers and contacts with one of these keys. Each argument is what ``in_`` takes: an expanding
    bound parameter (``KEY_ROWS``) or a list of bound values (``intake.inserts`` binds the new lead's own
    keys). The inner selects find ids, each answered from its key index alone; the outer ones read those
    rows by primary key. Asking the key indexes for more columns directly, or OR-ing the columns, lets
    SQLite's planner (after ANALYZE, on the mostly-NULL WeChat column) choose a table scan."""

    def ids(table):
        return union_all(
            select(table.c.id).where(table.c.phone_key.in_(phones)),
            select(table.c.id).where(table.c.wechat_key.in_(wechats)),
            select(table.c.id).where(table.c.email_key.in_(emails)),
        )

    c, t = _CUSTOMERS.alias("c"), _CONTACTS.alias("t")
    shared = (c.c.id, c.c.owner_id, c.c.pool_id, c.c.name)
    return union_all(
        select(*shared, c.c.phone_key, c.c.email_key, c.c.wechat_key, c.c.merged_into_id,
               literal_column("0").label("via_contact")).where(c.c.id.in_(ids(_CUSTOMERS))),
        select(*shared, t.c.phone_key, t.c.email_key, t.c.wechat_key, c.c.merged_into_id,
               literal_column("1").label("via_contact")).select_from(t.join(c, c.c.id == t.c.customer_id))
        .where(t.c.id.in_(ids(_CONTACTS))),
    )  # fmt: skip


_CUSTOMERS = Customer.__table__
_CONTACTS = Contact.__table__
# Built once (this runs for every lead); a WeChat id stored as a phone (微信同号) is looked up as both.
KEY_ROWS = key_rows(*(bindparam(name, expanding=True, type_=String) for name in ("p", "w", "e")))


def _lookup(session: Session, phones: list[str], wechats: list[str], emails: list[str]):
    """Rows (id, owner, pool, name, keys, merged into, via_contact) of customers and contacts with these keys."""
    n = max(len(phones), len(wechats), len(emails))
    for start in range(0, n, IN_CHUNK):
        p, w, e = (lst[start : start + IN_CHUNK] for lst in (phones, wechats, emails))
        w = w + p  # a WeChat id stored as a phone (微信同号)
        yield session.execute(KEY_ROWS, {"p": p, "w": w, "e": e}).all()


# ---------------------------------------------------------------- fuzzy


def similarity(a: str, b: str) -> float:
    """0–100: the Indel ratio, or 95 % of the best partial alignment when one name contains the other
    (上海星河科技 vs 星河科技) and the shorter has at least 4 characters."""
    score = fuzz.ratio(a, b)
    if min(len(a), len(b)) >= 4:
        score = max(score, 0.95 * fuzz.partial_ratio(a, b))
    return round(score, 1)


_NEWEST_POSTINGS = text(
    "SELECT ng.gram, ng.customer_id, c.name_key FROM name_grams ng JOIN customers c ON c.id = ng.customer_id "
    "WHERE ng.gram = :gram AND c.merged_into_id IS NULL ORDER BY ng.customer_id DESC LIMIT :cap"
)


def _prefix_size(n_grams: int) -> int:
    """How many of the rarest grams a close match must share at least one of."""
    if n_grams <= 3:
        return n_grams
    return min(n_grams, 6, max(3, math.ceil(0.6 * n_grams)))


# Candidates of each name in one statement: the grams shared with each customer are counted by the database
# (the postings never travel to Python) and the best ``:cap`` per name kept (ties: newest first), leaving
# out ``:ex`` (the leads of this very call). Their name keys are read afterwards, once per customer (an
# import's names share many candidates), which also drops merged customers.
_RANKED_SQLITE = text(
    "WITH q AS (SELECT CAST(json_extract(value, '$[0]') AS INTEGER) AS i, json_extract(value, '$[1]') AS gram, "
    "CAST(json_extract(value, '$[2]') AS INTEGER) AS need FROM json_each(:pairs)), "
    "counted AS (SELECT q.i AS i, ng.customer_id AS cid, count(*) AS n "
    "FROM q CROSS JOIN name_grams AS ng ON ng.gram = q.gram "  # CROSS JOIN: q drives
    "GROUP BY q.i, ng.customer_id HAVING count(*) >= max(q.need)), "
    "ranked AS (SELECT i, cid, n, row_number() OVER (PARTITION BY i ORDER BY n DESC, cid DESC) AS rk "
    "FROM counted WHERE cid < :below AND cid NOT IN (SELECT value FROM json_each(:ex))) "
    "SELECT i, cid, n FROM ranked WHERE rk <= :cap ORDER BY i, rk"
)
_RANKED_PG = text(
    "WITH counted AS (SELECT q.i, ng.customer_id AS cid, count(*) AS n FROM unnest(CAST(:idx AS integer[]), "
    "CAST(:grams AS text[]), CAST(:needs AS integer[])) AS q(i, gram, need) "
    "JOIN name_grams ng ON ng.gram = q.gram GROUP BY q.i, ng.customer_id HAVING count(*) >= max(q.need)), "
    "ranked AS (SELECT i, cid, n, row_number() OVER (PARTITION BY i ORDER BY n DESC, cid DESC) AS rk "
    "FROM counted WHERE cid < :below AND cid NOT IN (SELECT unnest(CAST(:ex AS integer[])))) "  # hashed
    "SELECT i, cid, n FROM ranked WHERE rk <= :cap ORDER BY i, rk"
)
_NAME_KEYS = text(
    "SELECT id, name_key FROM customers WHERE id IN :ids AND merged_into_id IS NULL"
).bindparams(bindparam("ids", expanding=True, type_=Integer))


def _ranked(
    session: Session, pairs: list[tuple[int, str, int]], cap: int, exclude: set[int], below: int
) -> list[tuple[int, int, int]]:
    """(name index, customer id, shared grams) of the best ``cap`` candidates of each name that
    share at least ``need`` of its chosen grams, best first. Chunked by name (never splitting one name's
    grams), about 3,000 grams a statement."""
    by_name: dict[int, list[tuple[int, str, int]]] = {}
    for pair in pairs:
        by_name.setdefault(pair[0], []).append(pair)
    chunks: list[list[tuple[int, str, int]]] = [[]]
    for group in by_name.values():
        if len(chunks[-1]) + len(group) > 3000 and chunks[-1]:
            chunks.append([])
        chunks[-1].extend(group)
    out = []
    postgres = session.get_bind().dialect.name == "postgresql"
    ex = sorted(exclude)
    for chunk in chunks:
        if not chunk:
            continue
        if postgres:
            params = {
                "idx": [p[0] for p in chunk],
                "grams": [p[1] for p in chunk],
                "needs": [p[2] for p in chunk],
                "ex": ex,
                "cap": cap,
                "below": below,
            }
            out += session.execute(_RANKED_PG, params).all()
        else:
            params = {
                "pairs": json.dumps(chunk, ensure_ascii=False),
                "ex": json.dumps(ex),
                "cap": cap,
                "below": below,
            }
            out += session.execute(_RANKED_SQLITE, params).all()
    return out


def fuzzy_matches(
    session: Session,
    name_keys: list[str],
    threshold: float,
    *,
    exclude: list[set[int]] | None = None,
    limit: int = 3,
    below: int | None = None,
) -> list[list[tuple[int, float]]]:
    """For each name key, up to ``limit`` (customer_id, similarity) at or above ``threshold``, best first.

    Candidates share at least one (names of up to four grams) or two (longer names) of the name's rarest
    grams; the database counts the shared grams (grams carried by up to ``COUNTED_CAP`` customers). A name
    whose rarest grams are nearly all more common than that is compared with the newest ``POSTING_CAP``
    customers of each of them instead.

    ``below``: only customers with a smaller id (a deferred check sees what a check at intake time would
    have seen, not the leads that came after it — they look back at this one themselves).
    """
    below = MAX_ID if below is None else below
    grams_of = [normalize.name_grams(k) if len(k) >= 2 else [] for k in name_keys]
    freq = grams.gram_counts(session, sorted({g for gs in grams_of for g in gs}))
    shared: list[Counter] = [Counter() for _ in name_keys]
    pairs: list[tuple[int, str, int]] = []
    crowded: list[int] = []  # names whose chosen grams are too common for the counted path
    chosen_of: list[list[str]] = []
    for index, gs in enumerate(grams_of):
        ordered = sorted(gs, key=lambda g: (freq.get(g, 0), g))
        need = 1 if len(gs) <= 4 else 2
        chosen = ordered[: _prefix_size(len(ordered)) + (need - 1)]
        chosen_of.append(chosen)
        rare = [g for g in chosen if freq.get(g, 0) <= COUNTED_CAP]
        if len(rare) >= need:
            pairs += [(index, g, need) for g in rare]
        elif chosen:
            crowded.append(index)
    # One exclusion set for every name (an intake call leaves out its own leads): applied by the database;
    # different sets per name are applied here, after reading that many more candidates.
    common = exclude[0] if exclude and all(e is exclude[0] or e == exclude[0] for e in exclude[1:]) else set()
    extra = 0 if not exclude or common else max(len(e) for e in exclude)
    names: dict[int, str] = {}
    ranked: list[list[int]] = [[] for _ in name_keys]
    for index, cid, _n in _ranked(session, pairs, CANDIDATE_CAP + extra, common, below):
        ranked[index].append(cid)
    if crowded:
        postings: dict[str, list[tuple[int, str]]] = {}
        for gram in sorted({g for i in crowded for g in chosen_of[i]}):
            rows = session.execute(_NEWEST_POSTINGS, {"gram": gram, "cap": POSTING_CAP}).all()
            postings[gram] = [(cid, key) for _g, cid, key in rows]
        for index in crowded:
            for gram in chosen_of[index]:
                for cid, key in postings[gram]:
                    if cid >= below:
                        continue
                    shared[index][cid] += 1
                    names[cid] = key
            ranked[index] = [
                cid for cid, _n in shared[index].most_common(CANDIDATE_CAP + len(common) + extra)
            ]
    tops: list[list[int]] = []
    for index, candidates in enumerate(ranked):
        skip = (exclude[index] if exclude else set()) | common
        tops.append([cid for cid in candidates if cid not in skip][:CANDIDATE_CAP])
    missing = sorted({cid for top in tops for cid in top if cid not in names})
    for chunk in _chunks(missing, 900):
        names.update(session.execute(_NAME_KEYS, {"ids": chunk}).all())

    results: list[list[tuple[int, float]]] = []
    for key, top in zip(name_keys, tops, strict=True):
        choices = {cid: names[cid] for cid in top if cid in names}  # merged customers drop out here
        results.append(_scored(key, choices, threshold)[:limit])
    return results


def _scored(key: str, choices: dict[int, str], threshold: float) -> list[tuple[int, float]]:
    """(id, similarity) of the ``choices`` at or above ``threshold``, best first (``similarity``'s rule,
    scored by rapidfuzz's C loop)."""
    if not choices:
        return []
    scores: dict[int, float] = {}
    for _choice, score, cid in process.extract(
        key, choices, scorer=fuzz.ratio, score_cutoff=threshold, limit=None
    ):
        scores[cid] = score
    if len(key) >= 4:
        longer = {cid: k for cid, k in choices.items() if len(k) >= 4}
        cutoff = min(100.0, threshold / 0.95)
        for _choice, score, cid in process.extract(
            key, longer, scorer=fuzz.partial_ratio, score_cutoff=cutoff, limit=None
        ):
            scores[cid] = max(scores.get(cid, 0.0), 0.95 * score)
    return sorted(
        ((cid, round(s, 1)) for cid, s in scores.items() if s >= threshold), key=lambda x: (-x[1], -x[0])
    )


def batch_fuzzy(name_keys: list[str], threshold: float, *, limit: int = 3) -> list[list[tuple[int, float]]]:
    """For each name key, up to ``limit`` (index of an EARLIER name of the same batch, similarity) at or
    above ``threshold``, best first — the batch checked against itself.

    Blocking as in ``fuzzy_matches``, on in-memory postings: a name's grams ordered rarest first within
    the batch, candidates share at least ``need`` of the chosen prefix, each gram's postings capped at the
    newest ``POSTING_CAP`` earlier names, the best ``CANDIDATE_CAP`` scored with ``similarity``'s rule."""
    grams_of = [normalize.name_grams(k) if len(k) >= 2 else [] for k in name_keys]
    freq = Counter(g for gs in grams_of for g in set(gs))
    postings: dict[str, list[int]] = {}
    out: list[list[tuple[int, float]]] = []
    for index, (key, gs) in enumerate(zip(name_keys, grams_of, strict=True)):
        found: list[tuple[int, float]] = []
        if gs:
            ordered = sorted(gs, key=lambda g: (freq[g], g))
            need = 1 if len(gs) <= 4 else 2
            chosen = ordered[: _prefix_size(len(ordered)) + (need - 1)]
            shared: Counter = Counter()
            for gram in chosen:
                shared.update(postings.get(gram, [])[-BATCH_POSTING_CAP:])
            least = min(need, len(chosen))
            close = [(n, j) for j, n in shared.items() if n >= least]
            if len(close) > BATCH_CANDIDATE_CAP:
                close = heapq.nlargest(BATCH_CANDIDATE_CAP, close)
            found = _scored(key, {j: name_keys[j] for _n, j in close}, threshold)
            for gram in gs:
                postings.setdefault(gram, []).append(index)
        out.append(found[:limit])
    return out


def distinct_pairs(session: Session, customer_id: int) -> set[int]:
    """Customers an admin said are not duplicates of ``customer_id`` (never asked again)."""
    rows = session.execute(
        select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id).where(
            or_(DuplicateConflict.customer_id == customer_id, DuplicateConflict.candidate_id == customer_id)
        )
    ).all()
    return {b if a == customer_id else a for a, b in rows}
