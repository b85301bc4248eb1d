"""Writing new leads: their customer rows, name grams and "created" ledger rows, for ``intake``.

A single new lead on PostgreSQL (the API's one-lead request, the public form, manual entry) is ONE
statement: data-modifying CTEs insert the customer, then its grams and its ledger row with the id the
customer insert returns, and bump the gram counts — one round trip and one statement's client work instead
of three. Otherwise (several leads, or SQLite, which has no INSERT inside WITH) it is one
``INSERT … RETURNING`` of all the customers, their grams (``grams.write_grams``) and one INSERT of their
ledger rows. Leads whose possible-duplicate check runs later get their ``PendingDuplicateCheck`` row in the
same statement (PostgreSQL, one lead) or one more INSERT. Nothing is read back through the ORM.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from sqlalchemy import Select, String, bindparam, exists, func, insert, literal_column, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from crm.dbutil import is_postgres
from crm.intake import dedupe, grams
from crm.models import Customer, NameGram, PendingDuplicateCheck, PoolEvent
from crm.models.intake import NameGramStat
from crm.pool.services import EVENT_FIELDS, check_event_kind, record_events

_CUSTOMERS = Customer.__table__
_EVENTS = PoolEvent.__table__
_PENDING = PendingDuplicateCheck.__table__


def insert_leads(
    session: Session, leads: list[SimpleNamespace], events: list[dict], check_later: list[bool]
) -> None:
    """Insert ``leads`` (a customer's column values as attributes; ``id`` is set here), their name grams,
    ``events`` (each lead's ledger row as for ``record_events``, without ``customer_id``), and a pending
    possible-duplicate check for the leads whose ``check_later`` is true (checked together, later)."""
    if not leads:
        return
    if len(leads) == 1 and is_postgres(session):
        _insert_one(session, leads[0], events[0], check_later[0])
        return
    if is_postgres(session) and len(leads) > 50:
        with _psycopg_caches_big_statements():
            _insert_many(session, leads, events, check_later)
        return
    _insert_many(session, leads, events, check_later)


@contextlib.contextmanager
def _psycopg_caches_big_statements():
    """psycopg turns a statement's ``%(name)s`` placeholders into ``$n`` in Python, and caches the result only
    for statements of at most 50 parameters: an import chunk's multi-row INSERTs (40,000 parameters for 1,000
    customers) were parsed again for every chunk — about half of a PostgreSQL import. Their text is the same
    for every full chunk, so psycopg may cache them while they are written (its cache keeps 128 entries)."""
    try:
        from psycopg import _queries
    except ImportError:  # pragma: no cover - another driver
        yield
        return
    names = ("MAX_CACHED_STATEMENT_LENGTH", "MAX_CACHED_STATEMENT_PARAMS")
    if not all(hasattr(_queries, n) for n in names):  # pragma: no cover - a psycopg without these limits
        yield
        return
    old = [getattr(_queries, n) for n in names]
    _queries.MAX_CACHED_STATEMENT_LENGTH, _queries.MAX_CACHED_STATEMENT_PARAMS = 4 << 20, 1 << 16
    try:
        yield
    finally:
        for name, value in zip(names, old, strict=True):
            setattr(_queries, name, value)


def release_statement_cache() -> None:
    """Drop psycopg's cached statements (an import's big INSERTs, a few MB each) once the import is done."""
    try:
        from psycopg import _queries
    except ImportError:  # pragma: no cover - another driver
        return
    for name in ("_query2pg", "_query2pg_client"):
        cached = getattr(_queries, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def _insert_many(
    session: Session, leads: list[SimpleNamespace], events: list[dict], check_later: list[bool]
) -> None:
    columns = [c for c in vars(leads[0]) if c != "id"]
    rows = [{c: getattr(lead, c) for c in columns} for lead in leads]
    if is_postgres(session):
        result = session.execute(
            insert(_CUSTOMERS).returning(_CUSTOMERS.c.id, sort_by_parameter_order=True), rows
        )
        new_ids = [customer_id for (customer_id,) in result.all()]
    else:
        # SQLite: an ordered RETURNING makes SQLAlchemy insert one row per statement (1,000 statements for a
        # 1,000-row import chunk). Under intake's write lock the rows of these INSERTs get ascending rowids in
        # the order given, so the unordered RETURNING, sorted, is that order.
        new_ids = sorted(customer_id for (customer_id,) in session.execute(
            insert(_CUSTOMERS).returning(_CUSTOMERS.c.id), rows).all())  # fmt: skip
    for lead, customer_id in zip(leads, new_ids, strict=True):
        lead.id = customer_id
    grams.write_grams(session, [(lead.id, lead.name_key) for lead in leads if lead.name_key])
    record_events(
        session, [event | {"customer_id": lead.id} for lead, event in zip(leads, events, strict=True)]
    )
    later = [lead.id for lead, flag in zip(leads, check_later, strict=True) if flag]
    if later:
        session.execute(insert(_PENDING), [{"customer_id": i, "group_id": later[0]} for i in later])


def insert_unless_duplicate(session: Session, lead: SimpleNamespace, event: dict, check_later: bool) -> list:
    """PostgreSQL, one lead: ``insert_leads`` in the statement that looks for the lead's exact duplicates
    (``dedupe.key_rows`` of its own phone, WeChat and e-mail keys, under the intake lock), so a new lead
    costs one round trip for both. The lead is written only when no live customer or contact has one of
    its keys. Returns the rows found (for ``dedupe.matches_in``; nothing was written when one of them is
    live), else [] and ``lead.id`` is set."""
    found = []
    for row in _write_one(session, lead, event, check_later, unless_duplicate=True):
        if row.new_id is not None:
            lead.id = row.new_id
        if row.id is not None:
            found.append(row)
    return found


def _insert_one(session: Session, lead: SimpleNamespace, event: dict, check_later: bool) -> None:
    ((lead.id,),) = _write_one(session, lead, event, check_later, unless_duplicate=False)


def _write_one(
    session: Session, lead: SimpleNamespace, event: dict, check_later: bool, *, unless_duplicate: bool
) -> list:
    """Run the one-lead statement; returns its rows. Keeps this process's gram counts in step."""
    columns = tuple(c for c in vars(lead) if c != "id")
    gram_list, _ids, counts = grams.gram_rows([(None, lead.name_key)] if lead.name_key else [])
    check_event_kind(event["kind"])
    ledger = tuple(c for c in EVENT_FIELDS if c in event and c != "customer_id")
    params = (
        {f"c_{c}": getattr(lead, c) for c in columns}
        | {f"e_{c}": event[c] for c in ledger}
        | {"grams": gram_list}
    )
    rows = session.execute(_one_statement(columns, ledger, check_later, unless_duplicate), params).all()
    if any(row[0] is not None for row in rows):  # the first column is the new id
        grams.counted(session, counts)
    return rows


_STATEMENTS: dict[tuple, Select] = {}


def _one_statement(
    columns: tuple[str, ...], ledger: tuple[str, ...], check_later: bool, unless_duplicate: bool
) -> Select:
    """The one-lead statement for these customer and ledger columns, built once (PostgreSQL only).

    Only the ledger columns the row sets are bound (the rest are NULL by default): psycopg caches the
    conversion of a query with at most 50 parameters, and a new lead binds its ~40 customer columns."""
    key = (columns, ledger, check_later, unless_duplicate)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = _build_one(*key)
    return stmt


def _build_one(
    columns: tuple[str, ...], ledger_columns: tuple[str, ...], check_later: bool, unless_duplicate: bool
) -> Select:
    binds = {c: bindparam(f"c_{c}", type_=_CUSTOMERS.c[c].type) for c in columns}
    values = select(*binds.values())
    if unless_duplicate:
        # The lead's own keys, bound once for the row and the look-up (no more parameters: see above). A
        # WeChat id stored as a phone (微信同号) is looked up as both; NULLs match nothing.
        phone, wechat, email = binds["phone_key"], binds["wechat_key"], binds["email_key"]
        found = dedupe.key_rows([phone, wechat], [wechat, phone], [email]).cte("found")
        values = values.where(~exists().where(found.c.merged_into_id.is_(None)))
    new = insert(_CUSTOMERS).from_select(columns, values).returning(_CUSTOMERS.c.id).cte("new_customer")
    gram = func.unnest(bindparam("grams", type_=ARRAY(String))).table_valued("gram").render_derived()
    gram_rows = (
        insert(NameGram.__table__)
        .from_select(
            ["gram", "customer_id"], select(gram.c.gram, new.c.id).select_from(new).join(gram, true())
        )
        .cte("new_grams")
    )
    stats = NameGramStat.__table__
    # The counts from the same grams (sorted: concurrent writers lock rows in one order); none for a lead
    # that was not written.
    counts = pg_insert(stats).from_select(
        ["gram", "n"],
        select(gram.c.gram, func.count())
        .select_from(gram)
        .where(exists(select(new.c.id)))
        .group_by(gram.c.gram)
        .order_by(gram.c.gram),
    )
    counts = counts.on_conflict_do_update(index_elements=["gram"], set_={"n": stats.c.n + counts.excluded.n})
    ledger = (
        insert(_EVENTS)
        .from_select(
            ["customer_id", *ledger_columns],
            select(new.c.id, *(bindparam(f"e_{c}", type_=_EVENTS.c[c].type) for c in ledger_columns)),
        )
        .cte("new_ledger_row")
    )
    writes = [gram_rows, counts.cte("gram_counts"), ledger]
    if check_later:
        pending = insert(_PENDING).from_select(["customer_id", "group_id"], select(new.c.id, new.c.id))
        writes.append(pending.cte("new_pending_check"))
    if not unless_duplicate:
        return select(new.c.id).add_cte(*writes)
    # One row per duplicate found (``new_id`` NULL), else one row with the new id.
    one = select(literal_column("1").label("one")).subquery("one")
    return (
        select(new.c.id.label("new_id"), *found.c)
        .select_from(one)
        .outerjoin(new, true())
        .outerjoin(found, true())
        .add_cte(*writes)
    )
