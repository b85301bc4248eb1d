"""The pool board (公海看板): a pool's claimable customers, best score first, with filters and keyset
pagination on (score, id), served by the partial indexes on ``customers`` (see ``crm/models/customers.py``).

Shown: unowned, not merged, and already released (``visible_from`` empty or past — fair release hides
the rest until their release time). Search: a phone number matches the normalised ``phone_key`` of the
customer or one of its contacts exactly (a partial number would let anyone probe masked contacts);
anything else matches the company name.

In a pool that masks contacts, a search by phone answers whether that number is there: a rep could
recover a masked ``158****9378`` by trying the 10,000 candidates. So such searches by anyone who sees the
pool masked are budgeted per user and day (``MASKED_PHONE_SEARCHES_PER_DAY``, default 20: days of guessing
for one number) and each is recorded (``RateLimitHit`` rows: who, which pool, what); the pool's admins and
admins see the numbers anyway and are not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import NamedTuple

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from crm import clock, ratelimit
from crm.customers.keys import looks_like_phone
from crm.customers.services import search_condition
from crm.inputguard import parse_id
from crm.models import Customer, Pool, Tag, User, customer_tags

PAGE_SIZE = 30
MASKED_PHONE_SEARCHES_PER_DAY = 20
GRADES = ("A", "B", "C")
OPTIONS_TTL_SECONDS = 300


@dataclass
class BoardFilters:
    """What the rep asked for; every field is optional. ``cursor`` is the last row seen (score, id)."""

    q: str = ""
    region: str = ""
    industry: str = ""
    grade: str = ""
    tag_id: int | None = None
    source: str = ""
    new_today: bool = False
    cursor: tuple[int, int] | None = None

    @classmethod
    def from_args(cls, args) -> BoardFilters:
        """From query-string / JSON arguments; unknown or malformed values are ignored, never an error."""

        def text(name: str, limit: int = 60) -> str:
            return str(args.get(name) or "").strip()[:limit]

        tag = text("tag", 12)
        grade = text("grade", 1).upper()
        return cls(
            q=text("q", 80),
            region=text("region"),
            industry=text("industry"),
            grade=grade if grade in GRADES else "",
            tag_id=parse_id(tag),
            source=text("source"),
            new_today=str(args.get("new") or "").lower() in ("1", "true", "y", "on"),
            cursor=parse_cursor(text("cursor", 40)),
        )

    def query_args(self) -> dict:
        """The non-empty filters as query-string arguments (for links and the next-page URL)."""
        args = {
            "q": self.q,
            "region": self.region,
            "industry": self.industry,
            "grade": self.grade,
            "tag": self.tag_id or "",
            "source": self.source,
            "new": "1" if self.new_today else "",
        }
        return {k: v for k, v in args.items() if v}

    @property
    def active(self) -> bool:
        return bool(self.query_args())


class SearchBudgetSpent(Exception):
    """The user's phone searches in masked pools are used up for today."""

    def __init__(self, limit: int):
        super().__init__(
            _(
                "今天在隐藏号码的公海里按电话号码搜索的次数已用完(每天 %(n)s 次),请明天再试,"
                "或请公海管理员协助查找。",
                n=limit,
            )
        )
        self.message = str(self)


def guard_phone_search(pool: Pool, user: User, filters: BoardFilters, masked: bool, now: datetime) -> None:
    """Count a phone-number search in a pool ``user`` sees masked; ``SearchBudgetSpent`` past the day's
    budget (the search is then not run). Other searches, and unmasked viewers, pass untouched."""
    if not masked or not filters.q or not looks_like_phone(filters.q):
        return
    limit = int(current_app.config.get("MASKED_PHONE_SEARCHES_PER_DAY", MASKED_PHONE_SEARCHES_PER_DAY))
    detail = f"pool={pool.id} q={filters.q}"
    if not ratelimit.hit(f"masked-phone-search:{user.id}", timedelta(days=1), limit, now, detail):
        raise SearchBudgetSpent(limit)


def parse_cursor(text: str | None) -> tuple[int, int] | None:
    """``"87.1234"`` → (87, 1234); anything else → None (start from the top)."""
    if not text:
        return None
    parts = text.split(".")
    if len(parts) != 2:
        return None
    try:
        score, cid = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return score, cid


def encode_cursor(score: int, customer_id: int) -> str:
    return f"{score}.{customer_id}"


def claimable(now: datetime):
    """The SQL condition for "sits in its pool and may be claimed now"."""
    return and_(
        Customer.owner_id.is_(None),
        Customer.merged_into_id.is_(None),
        or_(Customer.visible_from.is_(None), Customer.visible_from <= now),
    )


def board_statement(
    pool_id: int, filters: BoardFilters, now: datetime, limit: int = PAGE_SIZE, columns: tuple = (Customer,)
) -> Select:
    """One board page (the query the partial indexes are built for): ``columns`` of the claimable
    customers of a pool, best score first, after the cursor."""
    stmt = select(*columns).where(Customer.pool_id == pool_id, claimable(now))
    stmt = apply_filters(stmt, filters, now)
    if filters.cursor is not None:
        score, cid = filters.cursor
        stmt = stmt.where(or_(Customer.score < score, and_(Customer.score == score, Customer.id < cid)))
    return stmt.order_by(Customer.score.desc(), Customer.id.desc()).limit(limit)


def apply_filters(stmt: Select, filters: BoardFilters, now: datetime) -> Select:
    """Add the board filters (region/industry/grade/tag/source/today/search) to a customers query."""
    if filters.region:
        stmt = stmt.where(Customer.region == filters.region)
    if filters.industry:
        stmt = stmt.where(Customer.industry == filters.industry)
    if filters.grade:
        stmt = stmt.where(Customer.grade == filters.grade)
    if filters.source:
        stmt = stmt.where(or_(Customer.source == filters.source, Customer.channel == filters.source))
    if filters.tag_id:
        tagged = select(customer_tags.c.customer_id).where(customer_tags.c.tag_id == filters.tag_id)
        stmt = stmt.where(Customer.id.in_(tagged))
    if filters.new_today:
        start, _end = clock.local_day_bounds(None, now)
        stmt = stmt.where(Customer.pool_entered_at >= start)
    if filters.q:
        stmt = stmt.where(search_condition(filters.q, contact_name=False))
    return stmt


@dataclass
class BoardPage:
    customers: list  # BoardRow
    last_owner_names: dict[int, str] = field(default_factory=dict)
    next_cursor: str | None = None


# The columns a board row shows (loading whole rows would also parse their JSON columns, 30 times a page).
ROW_COLUMNS = (
    Customer.id, Customer.name, Customer.grade, Customer.score, Customer.senior_only, Customer.contact_name,
    Customer.job_title, Customer.phone, Customer.region, Customer.industry, Customer.channel, Customer.source,
    Customer.pool_entered_at, Customer.pool_id, Customer.owner_id, Customer.last_owner_id, Customer.visible_from,
    Customer.last_released_at,
)  # fmt: skip


# Built once: creating an alias copies every column of ``users`` (measurable on each board request).
_LAST_OWNER = aliased(User, name="last_owner")


def board_page(
    session: Session, pool: Pool, filters: BoardFilters, now: datetime, limit: int = PAGE_SIZE
) -> BoardPage:
    """One page of the board: rows (the columns a row shows, plus tags), previous owners' names, next cursor.

    Two plain queries — the rows with the previous owner's name joined, and their tags — returning light
    row objects instead of ORM entities (the board is the busiest screen; see bench/pool.py).
    """
    last_owner = _LAST_OWNER
    stmt = board_statement(
        pool.id, filters, now, limit + 1, columns=(*ROW_COLUMNS, last_owner.name.label("_lo"))
    )
    rows = session.execute(stmt.outerjoin(last_owner, last_owner.id == Customer.last_owner_id)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return BoardPage(customers=[])
    customers = [BoardRow(**row._mapping) for row in rows]
    by_id = {c.id: c for c in customers}
    for customer_id, name, system in session.execute(
        select(customer_tags.c.customer_id, Tag.name, Tag.system)
        .join(Tag, Tag.id == customer_tags.c.tag_id)
        .where(customer_tags.c.customer_id.in_(list(by_id)))
        .order_by(Tag.name)
    ):
        by_id[customer_id].tags.append(BoardTag(name, system))
    last = customers[-1]
    return BoardPage(
        customers=customers,
        last_owner_names={c.id: c._lo for c in customers if c._lo},
        next_cursor=encode_cursor(last.score, last.id) if more else None,
    )


class BoardTag(NamedTuple):
    name: str
    system: bool


class BoardRow(SimpleNamespace):
    """A board row: the ``ROW_COLUMNS`` of a customer as attributes, and ``tags``."""

    def __init__(self, **columns):
        super().__init__(tags=[], **columns)


COUNT_CAP = 1_000


def pool_counts(session: Session, pool_ids: list[int], now: datetime) -> dict[int, dict[str, int]]:
    """Per pool: customers claimable now (``open``), those waiting for a fair-release time (``waiting``),
    and ``capped`` when the pool holds more than ``COUNT_CAP`` (shown as "1000+").

    Each count reads at most ``COUNT_CAP`` index entries, so the pool list stays fast however big a pool
    grows (exact counts of a million-row pool cost hundreds of milliseconds).
    """
    counts = {}
    for pid in pool_ids:
        in_pool = and_(
            Customer.pool_id == pid, Customer.owner_id.is_(None), Customer.merged_into_id.is_(None)
        )
        limited = select(Customer.id).where(in_pool).limit(COUNT_CAP + 1).subquery()
        total = session.scalar(select(func.count()).select_from(limited)) or 0
        waiting = (
            session.scalar(
                select(func.count()).where(
                    in_pool, Customer.visible_from.is_not(None), Customer.visible_from > now
                )
            )
            or 0
        )
        capped = total > COUNT_CAP
        counts[pid] = {
            "open": min(total, COUNT_CAP) - (0 if capped else waiting),
            "waiting": waiting,
            "capped": capped,
        }
    return counts


def filter_options(session: Session, pool: Pool) -> dict[str, list]:
    """Values to offer in the filter selects: regions, industries and sources present in the pool, and tags.

    Computed from the pool's unowned customers and cached per app for a few minutes (a DISTINCT over a
    large pool is the one slow part of the board and the choices barely change; a new tag shows up in the
    filter after at most that long).
    """
    cache = current_app.extensions.setdefault("pool_board_options", {})
    hit = cache.get(pool.id)
    if hit and hit[0] > time.monotonic():
        values = hit[1]
    else:
        base = select().where(Customer.pool_id == pool.id, Customer.owner_id.is_(None))

        def distinct(column) -> list[str]:
            stmt = base.add_columns(column).where(column.is_not(None), column != "").distinct()
            return sorted(session.scalars(stmt.order_by(column).limit(200)))

        values = {
            "regions": distinct(Customer.region),
            "industries": distinct(Customer.industry),
            "sources": sorted(set(distinct(Customer.source)) | set(distinct(Customer.channel))),
            "tags": [
                tuple(t)
                for t in session.execute(
                    select(Tag.id, Tag.name, Tag.system).order_by(Tag.system.desc(), Tag.name)
                )
            ],
        }
        cache[pool.id] = (time.monotonic() + OPTIONS_TTL_SECONDS, values)
    return values | {"grades": list(GRADES)}
