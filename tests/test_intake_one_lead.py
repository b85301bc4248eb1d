"""A single lead: on PostgreSQL its exact-duplicate look-up and all its writes (customer, grams, gram
counts, ledger row, pending check) are one statement; these pin down that the outcome is the same as the
look-up-then-write path (SQLite, batches) — including what a duplicate must not write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, select

from crm.extensions import db
from crm.intake.services import LeadData, intake
from crm.models import (
    Contact,
    Customer,
    EventKind,
    NameGram,
    PendingDuplicateCheck,
    PoolEvent,
)
from crm.models.intake import NameGramStat
from tests.conftest import IS_PG

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def lead_pool(make, manager):
    return make.pool("新线索池", kind="lead", admins=[manager])


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_a_duplicate_writes_no_customer_grams_counts_or_pending_check(session, make, lead_pool):
    existing = make.customer(lead_pool, phone="13800138000", phone_key="+8613800138000")
    before = (_count(Customer), _count(NameGram), _count(PendingDuplicateCheck))
    counts = dict(session.execute(select(NameGramStat.gram, NameGramStat.n)).all())
    (out,) = intake(
        session, [LeadData(name="全新名字贸易有限公司", phone="+86 138-0013-8000")], source="api", now=NOW,
        defer_fuzzy=True,
    )  # fmt: skip
    assert out.status == "duplicate" and out.customer_id == existing.id and out.matched_on == "phone"
    assert (_count(Customer), _count(NameGram), _count(PendingDuplicateCheck)) == before
    assert dict(session.execute(select(NameGramStat.gram, NameGramStat.n)).all()) == counts
    kinds = session.scalars(
        select(PoolEvent.kind).where(PoolEvent.customer_id == existing.id).order_by(PoolEvent.id)
    ).all()
    assert kinds == [EventKind.CREATED, EventKind.DUPLICATE]


def test_a_new_lead_gets_its_grams_counts_ledger_row_and_pending_check(session, lead_pool):
    (out,) = intake(
        session, [LeadData(name="苏州瑞丰新材料有限公司", phone="13600136000")], source="api", now=NOW,
        defer_fuzzy=True,
    )  # fmt: skip
    assert out.status == "created" and out.duplicate_check == "queued"
    lead = session.get(Customer, out.customer_id)
    grams = sorted(session.scalars(select(NameGram.gram).where(NameGram.customer_id == lead.id)))
    assert grams and "瑞丰" in grams and lead.name_key == "苏州瑞丰新材料"
    assert session.scalar(select(NameGramStat.n).where(NameGramStat.gram == "瑞丰")) == 1
    assert session.scalars(select(PoolEvent.kind).where(PoolEvent.customer_id == lead.id)).all() == [
        EventKind.CREATED
    ]
    assert session.execute(
        select(PendingDuplicateCheck.customer_id, PendingDuplicateCheck.group_id)
    ).all() == [(lead.id, lead.id)]


def test_the_key_of_a_merged_away_customer_is_not_a_duplicate(session, make, lead_pool):
    winner = make.customer(lead_pool)
    make.customer(lead_pool, phone="13500135000", phone_key="+8613500135000", merged_into_id=winner.id)
    (out,) = intake(session, [LeadData(contact_name="钱", phone="13500135000")], source="api", now=NOW)
    assert out.status == "created"


def test_a_merged_away_and_a_live_record_with_the_key_match_the_live_one(session, make, lead_pool, rep):
    winner = make.customer(lead_pool, owner=rep)
    make.customer(lead_pool, phone="13500135000", phone_key="+8613500135000", merged_into_id=winner.id)
    session.add(Contact(customer_id=winner.id, name="钱", phone="13500135000", created_at=NOW))
    session.commit()
    (out,) = intake(session, [LeadData(contact_name="钱", phone="135 0013 5000")], source="api", now=NOW)
    assert out.status == "duplicate" and out.customer_id == winner.id and out.owner_id == rep.id


@pytest.mark.skipif(not IS_PG, reason="psycopg's query cache")
def test_the_one_lead_statement_stays_within_psycopgs_query_cache(session, lead_pool):
    """psycopg converts a query's placeholders once and caches it only when it has at most
    ``MAX_CACHED_STATEMENT_PARAMS`` parameters; past that every lead would pay the conversion again."""
    from psycopg._queries import MAX_CACHED_STATEMENT_PARAMS

    sizes = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("WITH found"):
            sizes.append(len(parameters))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        lead = LeadData(
            name="苏州瑞丰新材料有限公司", contact_name="周", phone="13600136000", email="z@rf.cn",
            wechat="zhou_rf", job_title="采购经理", job_level="决策层", industry="金融", region="华东",
            company_size=2000, address="苏州工业园区", notes="展会", channel="百度推广", campaign="春季",
            utm={"utm_source": "baidu", "utm_medium": "cpc"},
        )  # fmt: skip
        (out,) = intake(session, [lead], source="api", now=NOW, defer_fuzzy=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert out.status == "created"
    assert len(sizes) == 1 and sizes[0] <= MAX_CACHED_STATEMENT_PARAMS
