"""The one intake service: new leads, 撞单 routing, possible duplicates, routing by score, races."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.intake.services import LeadData, intake
from crm.models import (
    Activity,
    AssignStrategy,
    Contact,
    Customer,
    DuplicateConflict,
    EventKind,
    Lifecycle,
    NameGram,
    PoolEvent,
    Reminder,
    ReminderKind,
)
from tests.conftest import IS_PG

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def lead_pool(make, manager):
    return make.pool("新线索池", kind="lead", admins=[manager])


def _ledger(customer_id: int) -> list[str]:
    return list(
        db.session.scalars(
            select(PoolEvent.kind).where(PoolEvent.customer_id == customer_id).order_by(PoolEvent.id)
        )
    )


def test_a_new_lead_starts_unowned_in_the_lead_pool_with_its_source_and_a_created_row(session, lead_pool):
    with clock.frozen(NOW):
        (out,) = intake(
            session,
            [
                LeadData(
                    name="杭州云启信息技术有限公司",
                    contact_name="李雷",
                    phone="138 0013 8000",
                    channel="公众号",
                    campaign="春季展会",
                    utm={"utm_source": "wechat"},
                )
            ],  # fmt: skip
            source="api",
            now=NOW,
        )
    assert out.status == "created"
    customer = db.session.get(Customer, out.customer_id)
    assert customer.owner_id is None and customer.pool_id == lead_pool.id
    assert customer.lifecycle == Lifecycle.LEAD
    assert (customer.source, customer.channel, customer.campaign) == ("api", "公众号", "春季展会")
    assert customer.utm == {"utm_source": "wechat"}
    assert customer.arrived_at == NOW
    assert customer.phone_key == "+8613800138000" and customer.name_key == "杭州云启信息技术"
    assert _ledger(customer.id) == [EventKind.CREATED]
    grams = set(db.session.scalars(select(NameGram.gram).where(NameGram.customer_id == customer.id)))
    assert {"杭州", "云启", "技术"} <= grams


def test_a_fresh_install_gets_a_lead_pool(session, admin):
    (out,) = intake(session, [LeadData(contact_name="王芳", phone="13900139000")], source="api", now=NOW)
    customer = db.session.get(Customer, out.customer_id)
    assert customer.pool.name == "新线索池" and customer.pool.kind == "lead"
    assert customer.kind == "person" and customer.name == "王芳"


def test_duplicate_of_an_owned_customer_goes_on_its_timeline_and_the_owner_is_told(
    session, make, lead_pool, rep
):
    owned = make.customer(lead_pool, owner=rep, name="上海星河科技有限公司", phone="13800138000",
                          phone_key="+8613800138000")  # fmt: skip
    before = owned.arrived_at
    (out,) = intake(
        session, [LeadData(name="星河", contact_name="张三", phone="+86-138-0013-8000", channel="百度推广")],
        source="form", now=NOW,
    )  # fmt: skip
    assert out.status == "duplicate" and out.customer_id == owned.id and out.matched_on == "phone"
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    activity = db.session.scalar(select(Activity).where(Activity.customer_id == owned.id))
    assert activity.kind == "duplicate"
    assert activity.data["channel"] == "百度推广" and activity.data["contact_name"] == "张三"
    assert _ledger(owned.id)[-1] == EventKind.DUPLICATE
    note = db.session.scalar(select(Reminder).where(Reminder.user_id == rep.id))
    assert note.kind == ReminderKind.DUPLICATE and owned.name in note.title
    db.session.refresh(owned)
    assert owned.arrived_at == before  # owned customers are not bumped


def test_duplicate_of_a_pool_customer_is_attached_and_rises_on_the_board(session, make, lead_pool):
    waiting = make.customer(lead_pool, email="li@example.com", email_key="li@example.com")
    (out,) = intake(session, [LeadData(contact_name="李", email=" LI@Example.com ")], source="api", now=NOW)
    assert out.status == "duplicate" and out.matched_on == "email" and out.owner_id is None
    db.session.refresh(waiting)
    assert waiting.arrived_at == NOW
    assert _ledger(waiting.id)[-1] == EventKind.DUPLICATE
    assert db.session.scalar(select(func.count()).select_from(Reminder)) == 0


def test_a_contact_of_a_customer_counts_as_a_duplicate(session, make, lead_pool, rep):
    owned = make.customer(lead_pool, owner=rep)
    session.add(Contact(customer_id=owned.id, name="采购 王", wechat="Wang_Buyer", created_at=NOW))
    session.commit()
    (out,) = intake(session, [LeadData(contact_name="王", wechat="wang_buyer")], source="manual", now=NOW)
    assert out.status == "duplicate" and out.customer_id == owned.id and out.matched_on == "wechat"


def test_a_wechat_id_that_is_a_phone_matches_the_phone(session, make, lead_pool):
    existing = make.customer(lead_pool, phone="13700137000", phone_key="+8613700137000")
    (out,) = intake(session, [LeadData(contact_name="赵", wechat="137 0013 7000")], source="api", now=NOW)
    assert out.status == "duplicate" and out.customer_id == existing.id


def test_similar_company_name_opens_a_conflict_and_holds_routing(session, make, lead_pool, rep):
    lead_pool.auto_assign_strategy = AssignStrategy.ROUND_ROBIN
    session.add(lead_pool)
    session.commit()
    from crm.models import PoolMember

    session.add(PoolMember(pool_id=lead_pool.id, user_id=rep.id))
    session.commit()
    existing = make.customer(lead_pool, name="苏州瑞丰新材料有限公司")
    (out,) = intake(
        session,
        [
            LeadData(
                name="苏州瑞丰新材料科技有限公司",
                contact_name="周",
                phone="13600136000",
                industry="金融",
                job_level="决策层",
                company_size=2000,
                channel="老客户转介绍",
                region="华东",
                email="z@rf.cn",
                wechat="zhou_rf",
            )
        ],  # fmt: skip
        source="api",
        now=NOW,
    )
    assert out.status == "created"
    conflict = db.session.scalar(select(DuplicateConflict))
    assert (conflict.customer_id, conflict.candidate_id) == (out.customer_id, existing.id)
    assert conflict.status == "open" and conflict.similarity >= 85
    # High score, but a possible duplicate waits for the conflict queue instead of being auto-assigned.
    assert out.score >= 40 and out.owner_id is None


def test_a_different_company_opens_no_conflict(session, make, lead_pool):
    make.customer(lead_pool, name="苏州瑞丰新材料有限公司")
    intake(session, [LeadData(name="宁波天成物流有限公司", contact_name="钱", phone="13600136001")],
           source="api", now=NOW)  # fmt: skip
    assert db.session.scalar(select(func.count()).select_from(DuplicateConflict)) == 0


def test_leads_at_or_above_the_routing_threshold_are_auto_assigned(session, make, lead_pool, rep):
    from crm.models import PoolMember

    lead_pool.auto_assign_strategy = AssignStrategy.LOAD_BALANCE
    session.add(PoolMember(pool_id=lead_pool.id, user_id=rep.id))
    session.commit()
    hot = LeadData(name="深圳博远金融科技有限公司", contact_name="孙总", phone="13500135000", email="s@by.cn",
                   wechat="sun_by", industry="金融", job_level="决策层", company_size=1500, region="华南",
                   channel="老客户转介绍")  # fmt: skip
    cold = LeadData(contact_name="路人", phone="13500135001")
    hot_out, cold_out = intake(session, [hot, cold], source="api", now=NOW)
    assert hot_out.score >= 40 and hot_out.assigned_to == rep.id
    assert cold_out.score < 40 and cold_out.owner_id is None
    assert _ledger(hot_out.customer_id) == [EventKind.CREATED, EventKind.AUTO_ASSIGNED]
    assert db.session.get(Customer, cold_out.customer_id).owner_id is None


def test_invalid_leads_change_nothing(session, lead_pool):
    outs = intake(
        session,
        [
            LeadData(),
            LeadData(name="某公司"),
            LeadData(name="某公司", phone="12345"),
            LeadData(name="x", email="bad"),
        ],
        source="api",
        now=NOW,
    )
    assert [o.status for o in outs] == ["invalid"] * 4
    assert [e.field for e in outs[0].errors] == ["name", "phone"]
    assert outs[1].errors[0].message == "请至少填写电话、邮箱或微信中的一项。"
    assert "不是有效的电话号码" in outs[2].errors[0].message
    assert outs[3].errors[0].field == "email"
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_renaming_a_customer_moves_its_name_grams(session, make, lead_pool):
    customer = make.customer(lead_pool, name="温州嘉禾贸易有限公司")
    assert customer.name_key == "温州嘉禾贸易"
    customer.name = "温州锦程电子有限公司"
    session.commit()
    grams = set(db.session.scalars(select(NameGram.gram).where(NameGram.customer_id == customer.id)))
    assert customer.name_key == "温州锦程电子"
    assert "锦程" in grams and "嘉禾" not in grams


def test_editing_a_phone_recomputes_its_key(session, make, lead_pool):
    customer = make.customer(lead_pool)
    customer.phone = "(021) 6288-8888"
    session.commit()
    assert customer.phone_key == "+862162888888"


@pytest.mark.skipif(not IS_PG, reason="real concurrency needs PostgreSQL (SQLite serialises writers)")
def test_two_identical_leads_posted_at_once_give_one_customer(app, lead_pool):
    barrier = threading.Barrier(4)
    results = []

    def post():
        with app.app_context():
            barrier.wait()
            (out,) = intake(db.session, [LeadData(name="合肥汇通物流有限公司", phone="13300133000")],
                            source="api", now=NOW)  # fmt: skip
            results.append(out.status)
            db.session.remove()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created", "duplicate", "duplicate", "duplicate"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


def test_two_identical_leads_in_threads_on_sqlite_also_give_one_customer(app, lead_pool):
    """SQLite serialises writers; the lock makes the check-then-create one unit there too."""
    barrier = threading.Barrier(3)
    results = []

    def post():
        with app.app_context():
            barrier.wait()
            (out,) = intake(db.session, [LeadData(name="合肥汇通物流有限公司", phone="13300133000")],
                            source="api", now=NOW + timedelta(seconds=1))  # fmt: skip
            results.append(out.status)
            db.session.remove()

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created", "duplicate", "duplicate"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
