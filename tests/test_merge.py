"""The conflict queue: merge keeps everything on the winner; distinct pairs are never asked again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm.access import access
from crm.extensions import db
from crm.intake import merge
from crm.intake.services import LeadData, intake
from crm.models import (
    Activity,
    BehaviorEvent,
    Contact,
    Customer,
    DuplicateConflict,
    EventKind,
    FollowUp,
    NameGram,
    Opportunity,
    PoolEvent,
    Reminder,
    Role,
    Stage,
    Tag,
    customer_tags,
)

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def pool(make, rep, manager):
    return make.pool("新线索池", kind="lead", members=[rep], admins=[manager])


@pytest.fixture
def pair(session, make, pool, rep):
    """An owned customer (older) and a similar new lead with its own history."""
    old = make.customer(pool, owner=rep, name="南京明德教育科技有限公司", industry=None, email=None)
    (out,) = intake(
        session,
        [
            LeadData(
                name="南京明德教育科技发展有限公司",
                contact_name="吴老师",
                phone="13911112222",
                email="wu@mingde.cn",
                industry="教育",
                wechat="wu_md",
            )
        ],  # fmt: skip
        source="form",
        now=NOW,
    )
    new = db.session.get(Customer, out.customer_id)
    conflict = db.session.scalar(select(DuplicateConflict).where(DuplicateConflict.customer_id == new.id))
    assert conflict is not None and conflict.candidate_id == old.id
    stage_id = session.scalar(select(Stage.id))
    tag = Tag(name="展会客户")
    session.add(tag)
    session.flush()
    session.execute(customer_tags.insert().values(customer_id=new.id, tag_id=tag.id))
    session.add_all(
        [
            Contact(customer_id=new.id, name="财务 孙", phone="13122223333", created_at=NOW),
            FollowUp(customer_id=new.id, user_id=rep.id, at=NOW, channel="phone", content="问了价格", next_plan="报价",
                     next_contact_at=NOW + timedelta(days=2)),
            Opportunity(customer_id=new.id, name="年度采购", stage_id=stage_id, status="open", stage_changed_at=NOW,
                        created_at=NOW),
            Activity(customer_id=new.id, kind="note", at=NOW, title="备注", data={}),
            Reminder(user_id=rep.id, customer_id=new.id, kind="custom", title="回电", due_at=NOW, status="open",
                     unique_key="t:1", created_at=NOW),
        ]
    )  # fmt: skip
    session.commit()
    return old, new, conflict


def test_merge_keeps_contacts_followups_opportunities_activities_tags_and_keys(session, pair, admin, rep):
    old, new, conflict = pair
    merged = merge.merge(session, old.id, new.id, admin, NOW + timedelta(hours=1), conflict_id=conflict.id)
    assert merged.id == old.id

    def count(model, **where):
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return session.scalar(query)

    assert count(FollowUp, customer_id=old.id) == 1
    assert count(Opportunity, customer_id=old.id) == 1
    assert count(Reminder, customer_id=old.id) == 1
    assert count(BehaviorEvent, customer_id=old.id) == 1  # the form submission
    assert count(Activity, customer_id=old.id, kind="note") == 1
    assert (
        session.scalar(select(Tag.name).join(customer_tags).where(customer_tags.c.customer_id == old.id))
        == "展会客户"
    )
    assert count(FollowUp, customer_id=new.id) == count(Opportunity, customer_id=new.id) == 0
    db.session.refresh(old)
    # Blank fields filled from the loser; its phone (the winner has one) kept as a contact.
    assert old.industry == "教育" and old.email_key == "wu@mingde.cn" and old.wechat_key == "wu_md"
    phones = set(session.scalars(select(Contact.phone_key).where(Contact.customer_id == old.id)))
    assert {"+8613911112222", "+8613122223333"} <= phones
    # The loser's keys now find the winner.
    (again,) = intake(
        session,
        [LeadData(contact_name="吴", phone="139 1111 2222")],
        source="api",
        now=NOW + timedelta(hours=2),
    )
    assert again.status == "duplicate" and again.customer_id == old.id


def test_merge_ledgers_both_and_leaves_the_losers_ledger_in_place(session, pair, admin):
    old, new, conflict = pair
    merge.merge(session, old.id, new.id, admin, NOW + timedelta(hours=1), conflict_id=conflict.id)
    kinds = dict(
        (cid, [k for (k,) in session.execute(select(PoolEvent.kind).where(PoolEvent.customer_id == cid).order_by(PoolEvent.id))])
        for cid in (old.id, new.id)
    )  # fmt: skip
    assert kinds[old.id][-1] == EventKind.MERGED
    assert kinds[new.id] == [EventKind.CREATED, EventKind.MERGED]  # append-only: stays on the loser
    db.session.refresh(new)
    assert new.merged_into_id == old.id and new.owner_id is None
    assert (
        session.scalar(select(func.count()).select_from(NameGram).where(NameGram.customer_id == new.id)) == 0
    )
    db.session.refresh(conflict)
    assert conflict.status == "merged" and conflict.resolved_by_id == admin.id


def test_an_unowned_winner_takes_over_the_losers_owner(session, make, pool, rep, admin):
    owned = make.customer(pool, owner=rep, name="厦门众合物流有限公司")
    waiting = make.customer(pool, name="厦门众合物流")
    merge.merge(session, waiting.id, owned.id, admin, NOW)
    db.session.refresh(waiting)
    assert waiting.owner_id == rep.id
    event = session.scalar(
        select(PoolEvent).where(PoolEvent.customer_id == waiting.id, PoolEvent.kind == EventKind.MERGED)
    )
    assert event.to_user_id == rep.id and event.data["took_over_owner"] is True


def test_only_admins_merge(session, pair, manager):
    old, new, _conflict = pair
    with pytest.raises(merge.MergeError) as refused:
        merge.merge(session, old.id, new.id, manager, NOW)
    assert refused.value.code == "forbidden"
    db.session.refresh(new)
    assert new.merged_into_id is None


def test_merging_a_merged_customer_is_refused(session, pair, admin):
    old, new, _conflict = pair
    merge.merge(session, old.id, new.id, admin, NOW)
    with pytest.raises(merge.MergeError) as refused:
        merge.merge(session, new.id, old.id, admin, NOW)
    assert refused.value.code == "merged"


def test_a_distinct_pair_is_never_asked_again(session, make, pool, admin):
    a = make.customer(pool, name="成都远航贸易有限公司")
    b = make.customer(pool, name="成都远航贸易发展有限公司")
    c = make.customer(pool, name="成都远航贸易(集团)")
    distinct = make.conflict(b, a)
    merge.mark_distinct(session, distinct.id, admin, NOW)
    loser_pair = make.conflict(c, b)  # c resembles b too; merging c into a would ask about (a, b) again
    merge.merge(session, a.id, c.id, admin, NOW)
    db.session.refresh(loser_pair)
    assert loser_pair.status == "merged"
    pairs = session.execute(
        select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id, DuplicateConflict.status)
    ).all()
    assert sorted(pairs) == sorted([(b.id, a.id, "distinct"), (c.id, b.id, "merged")])


def test_marking_distinct_twice_says_it_was_already_handled(session, pair, admin):
    _old, _new, conflict = pair
    merge.mark_distinct(session, conflict.id, admin, NOW)
    with pytest.raises(merge.MergeError) as again:
        merge.mark_distinct(session, conflict.id, admin, NOW)
    assert again.value.code == "resolved"


def test_a_lead_held_back_by_a_possible_duplicate_is_routed_once_marked_distinct(session, make, rep, admin):
    from crm.models import AssignStrategy

    pool = make.pool("线索池", kind="lead", members=[rep], auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    make.customer(pool, name="佛山鼎盛制造有限公司")
    (out,) = intake(
        session,
        [
            LeadData(
                name="佛山鼎盛制造股份公司",
                contact_name="冯总",
                phone="13312345678",
                email="f@ds.cn",
                industry="金融",
                job_level="决策层",
                company_size=3000,
                region="华南",
                channel="老客户转介绍",
            )
        ],  # fmt: skip
        source="api",
        now=NOW,
    )
    assert out.conflicts and out.owner_id is None
    conflict = session.scalar(select(DuplicateConflict))
    merge.mark_distinct(session, conflict.id, admin, NOW)
    assert db.session.get(Customer, out.customer_id).owner_id == rep.id


def test_conflict_queue_page_merges_and_shows_the_rate(admin_client, pair):
    old, new, conflict = pair
    page = admin_client.get("/intake/conflicts")
    assert page.status_code == 200
    assert "冲突率" in page.text and new.name in page.text and old.name in page.text
    resp = admin_client.post(f"/intake/conflicts/{conflict.id}/merge", data={"keep": "candidate"})
    assert resp.status_code == 303
    assert db.session.get(Customer, new.id).merged_into_id == old.id
    assert "没有待处理" in admin_client.get("/intake/conflicts").text


def test_a_merged_customers_page_and_api_id_lead_to_the_winner(app, session, pair, admin, make, api):
    old, new, _conflict = pair

    @access(Role.REP)
    def show(customer_id: int):
        return f"customer {customer_id}"

    app.add_url_rule("/test/customers/<int:customer_id>", "test_customer", show)
    app.add_url_rule(
        "/api/v1/test/customers/<int:customer_id>", "test_customer_api", show, methods=["GET", "POST"]
    )
    merge.merge(session, old.id, new.id, admin, NOW)
    from tests.conftest import login

    client = app.test_client()
    login(client, admin)
    resp = client.get(f"/test/customers/{new.id}")
    assert resp.status_code == 301 and resp.headers["Location"].endswith(f"/test/customers/{old.id}")
    assert client.get(f"/test/customers/{old.id}").text == f"customer {old.id}"
    token = make.token(admin, "read")
    api_resp = api(token).get(f"/api/v1/test/customers/{new.id}")
    assert api_resp.status_code == 301 and api_resp.json["merged_into"] == old.id
    posted = api(token).post(f"/api/v1/test/customers/{new.id}")
    assert posted.status_code == 409 and posted.json["error"] == "merged"
