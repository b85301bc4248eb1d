"""Writing new leads: their customer rows, name grams and "created" ledger rows, for ``intake``.

A single new lead on PostgreSQL (the API's one-lead request, the public form, manual entry) is ONE
statement: data-modifying CTEs insert the customer, then its grams and its ledger row with the id the
customer insert returns, and bump the gram counts — one round trip and one statement's client work instead
of three. Otherwise (several leads, or SQLite, which has no INSERT inside WITH) it is one
``INSERT … RETURNING`` of all the customers, their grams (``grams.write_grams``) and one INSERT of their
ledger rows. Either way nothing is read back through the ORM.
"""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import Integer, Select, String, bindparam, func, insert, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from crm.dbutil import is_postgres
from crm.intake import grams
from crm.models import Customer, NameGram, PoolEvent
from crm.models.intake import NameGramStat
from crm.pool.services import EVENT_FIELDS, event_values, record_events

_CUSTOMERS = Customer.__table__
_EVENTS = PoolEvent.__table__


def insert_leads(session: Session, leads: list[SimpleNamespace], events: list[dict]) -> None:
    """Insert ``leads`` (a customer's column values as attributes; ``id`` is set here), their name grams,
    and ``events``: each lead's ledger row as for ``record_events``, without ``customer_id``."""
    if not leads:
        return
    if len(leads) == 1 and is_postgres(session):
        _insert_one(session, leads[0], events[0])
        return
    columns = [c for c in vars(leads[0]) if c != "id"]
    result = session.execute(
        insert(_CUSTOMERS).returning(_CUSTOMERS.c.id, sort_by_parameter_order=True),
        [{c: getattr(lead, c) for c in columns} for lead in leads],
    )
    for lead, (customer_id,) in zip(leads, result.all(), strict=True):
        lead.id = customer_id
    grams.write_grams(session, [(lead.id, lead.name_key) for lead in leads if lead.name_key])
    record_events(
        session, [event | {"customer_id": lead.id} for lead, event in zip(leads, events, strict=True)]
    )


def _insert_one(session: Session, lead: SimpleNamespace, event: dict) -> None:
    columns = tuple(c for c in vars(lead) if c != "id")
    gram_list, _ids, counts = grams.gram_rows([(None, lead.name_key)] if lead.name_key else [])
    event_values(event | {"customer_id": None})  # checks the kind
    ledger = tuple(c for c in EVENT_FIELDS if c in event and c != "customer_id")
    params = (
        {f"c_{c}": getattr(lead, c) for c in columns}
        | {f"e_{c}": event[c] for c in ledger}
        | {"grams": gram_list}
        | grams.stats_params(counts)
    )
    lead.id = session.execute(_one_statement(columns, ledger), params).scalar_one()
    grams.counted(session, counts)


_STATEMENTS: dict[tuple[tuple[str, ...], tuple[str, ...]], Select] = {}


def _one_statement(columns: tuple[str, ...], ledger: tuple[str, ...]) -> Select:
    """The one-lead statement for these customer and ledger columns, built once (PostgreSQL only).

    Only the ledger columns the row sets are bound (the rest are NULL by default): psycopg caches the
    conversion of a query with at most 50 parameters, and a new lead binds its ~40 customer columns."""
    stmt = _STATEMENTS.get((columns, ledger))
    if stmt is None:
        stmt = _STATEMENTS[(columns, ledger)] = _build_one(columns, ledger)
    return stmt


def _build_one(columns: tuple[str, ...], ledger_columns: tuple[str, ...]) -> Select:
    new = (
        insert(_CUSTOMERS)
        .values({c: bindparam(f"c_{c}", type_=_CUSTOMERS.c[c].type) for c in columns})
        .returning(_CUSTOMERS.c.id)
        .cte("new_customer")
    )
    gram = func.unnest(bindparam("grams", type_=ARRAY(String))).table_valued("gram").render_derived()
    gram_rows = (
        insert(NameGram.__table__)
        .from_select(
            ["gram", "customer_id"], select(gram.c.gram, new.c.id).select_from(new).join(gram, true())
        )
        .cte("new_grams")
    )
    stats = NameGramStat.__table__
    counts = pg_insert(stats).from_select(
        ["gram", "n"],
        select(
            func.unnest(bindparam("sgrams", type_=ARRAY(String))),
            func.unnest(bindparam("ns", type_=ARRAY(Integer))),
        ),
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
    return select(new.c.id).add_cte(gram_rows, counts.cte("gram_counts"), ledger)
