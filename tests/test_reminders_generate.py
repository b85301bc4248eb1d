"""Reminder generation: every source, set-based and idempotent (run twice, or twice at once, nothing
doubles), overdue escalation once, and stale reminders cancelled when a customer changes hands."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from crm import clock, signals
from crm.auth.services import manager_of
from crm.extensions import db
from crm.models import Customer, Reminder, Role, Stage, User
from crm.reminders import services
from crm.reminders.generate import generate_all
from crm.reminders.sql import manager_id_of
from tests.conftest import IS_PG

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_now():
    """Factories and services all see NOW unless a test moves on."""
    with clock.frozen(NOW):
        yield


@pytest.fixture
def pool(make, rep):
    return make.pool(members=[rep])


def _count(**where) -> int:
    query = select(func.count()).select_from(Reminder)
    for key, value in where.items():
        query = query.where(getattr(Reminder, key) == value)
    return db.session.scalar(query)


def _gen(at=NOW):
    result = generate_all(db.session, at)
    db.session.commit()
    return result


def _touched(make, pool, rep, grade, last, **kw):
    """A customer held for 40 days whose last real touch (of this holding) was at ``last``."""
    return make.customer(pool, owner=rep, grade=grade, claimed_at=NOW - timedelta(days=40), last_followup_at=last,
                         first_contact_at=NOW - timedelta(days=39), holding_followups=2, **kw)  # fmt: skip


def test_cadence_by_grade_since_last_touch(make, pool, rep):
    a_due = _touched(make, pool, rep, "A", NOW - timedelta(days=7, hours=1))
    a_fresh = _touched(make, pool, rep, "A", NOW - timedelta(days=5))
    c_due = make.customer(pool, owner=rep, grade="C", claimed_at=NOW - timedelta(days=30, hours=2))
    c_not = _touched(make, pool, rep, "C", NOW - timedelta(days=20))
    result = _gen()
    assert result.created["cadence"] == 2
    made = {r.customer_id: r for r in db.session.scalars(select(Reminder).where(Reminder.kind == "cadence"))}
    assert set(made) == {a_due.id, c_due.id}
    assert made[a_due.id].due_at == NOW - timedelta(hours=1)  # last touch + 7 days
    assert made[c_due.id].due_at == NOW - timedelta(hours=2)  # never touched: claim + 30 days
    assert made[a_due.id].user_id == rep.id
    assert a_fresh.id not in made and c_not.id not in made


def test_generation_is_idempotent(make, pool, rep, manager):
    _touched(make, pool, rep, "A", NOW - timedelta(days=9))
    make.customer(pool, owner=rep, grade="A", is_hot=True, last_stage_change_at=NOW - timedelta(days=20),
                  claimed_at=NOW - timedelta(days=20))  # fmt: skip
    make.customer(pool, owner=rep, claimed_at=NOW - timedelta(hours=5))
    cust = make.customer(pool, owner=rep, last_followup_at=NOW - timedelta(days=1))
    make.followup(cust, rep, at=NOW - timedelta(days=1), next_contact_at=NOW - timedelta(days=2))
    first = _gen()
    total = _count()
    assert first.total >= 4
    second = _gen()
    assert second.total == 0
    assert _count() == total
    keys = db.session.scalars(select(Reminder.unique_key)).all()
    assert len(keys) == len(set(keys))


def test_two_generation_passes_at_once_create_each_reminder_once(app, make, pool, rep):
    for i in range(30):
        _touched(make, pool, rep, "A", NOW - timedelta(days=8, minutes=i), commit=False)
    db.session.commit()
    errors = []
    barrier = threading.Barrier(2)

    def run():
        with app.app_context():
            try:
                barrier.wait()
                generate_all(db.session, NOW)
                db.session.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                db.session.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # SQLite serialises writers (the loser may time out on the lock); PostgreSQL must never fail.
    if IS_PG:
        assert not errors
    db.session.expire_all()
    assert _count(kind="cadence") == 30


def test_new_customer_first_contact_reminder(make, pool, rep):
    fresh = make.customer(pool, owner=rep, claimed_at=NOW - timedelta(hours=3))
    contacted = make.customer(pool, owner=rep, claimed_at=NOW - timedelta(hours=3),
                              first_contact_at=NOW - timedelta(hours=1), holding_followups=1)  # fmt: skip
    _gen()
    [r] = db.session.scalars(select(Reminder).where(Reminder.kind == "new_customer")).all()
    assert r.customer_id == fresh.id
    assert r.notify_at == NOW - timedelta(hours=3)  # shown from the claim
    assert r.due_at == NOW - timedelta(hours=3) + timedelta(days=3)  # deadline
    assert contacted.id != r.customer_id
    # The first follow-up answers it.
    from crm.followups.services import record_followup

    record_followup(db.session, fresh, rep, channel="phone", content="首次电话", goal_met=True, next_plan="发资料",
                    next_contact_at=NOW + timedelta(days=2), now=NOW)  # fmt: skip
    db.session.commit()
    db.session.refresh(r)
    assert r.status == "done"
    _gen(NOW + timedelta(minutes=5))
    assert _count(kind="new_customer", status="open") == 0


def test_next_contact_from_followups_saved_elsewhere(make, pool, rep):
    cust = make.customer(pool, owner=rep, last_followup_at=NOW - timedelta(days=1))
    make.followup(cust, rep, at=NOW - timedelta(days=2), next_contact_at=NOW - timedelta(days=1))
    latest = make.followup(cust, rep, at=NOW - timedelta(days=1), next_contact_at=NOW + timedelta(days=2),
                           next_plan="送样品")  # fmt: skip
    fake = make.followup(cust, rep, at=NOW - timedelta(hours=1), next_contact_at=NOW + timedelta(days=9),
                         is_fake=True)  # fmt: skip
    _gen()
    [r] = db.session.scalars(select(Reminder).where(Reminder.kind == "next_contact")).all()
    assert r.source_followup_id == latest.id and r.unique_key == f"next:{latest.id}"
    assert r.due_at == NOW + timedelta(days=2) and "送样品" in r.title
    assert fake.id != r.source_followup_id


def test_stalled_hot_customers_and_stage_change_answers_them(make, pool, rep):
    stage = db.session.scalar(select(Stage).order_by(Stage.position))
    hot = make.customer(
        pool, owner=rep, grade="B", is_hot=True, last_stage_change_at=NOW - timedelta(days=15)
    )
    grade_a = make.customer(pool, owner=rep, grade="A", last_stage_change_at=NOW - timedelta(days=30))
    moving = make.customer(pool, owner=rep, grade="A", last_stage_change_at=NOW - timedelta(days=3))
    cold = make.customer(pool, owner=rep, grade="C", last_stage_change_at=NOW - timedelta(days=60))
    won = db.session.scalar(select(Stage).where(Stage.kind == "won"))
    closed = make.customer(
        pool, owner=rep, grade="A", stage_id=won.id, last_stage_change_at=NOW - timedelta(days=60)
    )
    _gen()
    ids = set(db.session.scalars(select(Reminder.customer_id).where(Reminder.kind == "stalled")))
    assert ids == {hot.id, grade_a.id}
    assert not ids & {moving.id, cold.id, closed.id}
    # Moving the stage answers it at once (signal), and the next pass does not bring it back.
    db.session.execute(
        update(Customer).where(Customer.id == hot.id).values(last_stage_change_at=NOW, stage_id=stage.id)
    )
    signals.stage_changed.send(hot, session=db.session, customer=hot, now=NOW)
    db.session.commit()
    assert _count(kind="stalled", customer_id=hot.id, status="done") == 1
    _gen(NOW + timedelta(minutes=1))
    assert _count(kind="stalled", customer_id=hot.id, status="open") == 0


def test_overdue_reminder_escalates_to_the_manager_once(make, pool, rep, manager):
    cust = make.customer(pool, owner=rep, name="杭州星河科技有限公司")
    late = make.reminder(rep, customer=cust, kind="next_contact", due_at=NOW - timedelta(hours=25))
    recent = make.reminder(rep, customer=cust, kind="custom", due_at=NOW - timedelta(hours=2))
    result = _gen()
    assert result.escalated == 1
    [esc] = db.session.scalars(select(Reminder).where(Reminder.kind == "overdue_escalation")).all()
    assert esc.user_id == manager.id and esc.subject_user_id == rep.id
    assert rep.name in esc.title and "杭州星河科技有限公司" in esc.title
    db.session.refresh(late)
    db.session.refresh(recent)
    assert late.escalated_at == NOW and recent.escalated_at is None
    assert _gen(NOW + timedelta(hours=1)).escalated == 0
    assert _count(kind="overdue_escalation") == 1
    # The rep's follow-up answers the manager's escalation too.
    from crm.followups.services import record_followup

    record_followup(db.session, cust, rep, channel="phone", content="补打电话", goal_met=False, next_plan="再约",
                    next_contact_at=NOW + timedelta(days=2), now=NOW + timedelta(hours=2))  # fmt: skip
    db.session.commit()
    db.session.refresh(esc)
    assert esc.status == "done"


def test_no_escalation_without_a_manager(make, pool):
    loner = make.user(Role.REP)
    cust = make.customer(pool, owner=loner)
    make.reminder(loner, customer=cust, kind="cadence", due_at=NOW - timedelta(days=3))
    assert _gen().escalated == 0


@pytest.mark.parametrize("shape", ["explicit", "team", "self_manager", "none", "explicit_over_team"])
def test_set_based_manager_agrees_with_manager_of(make, session, shape):
    boss = make.user(Role.MANAGER)
    other_boss = make.user(Role.MANAGER)
    user = make.user(Role.REP)
    if shape == "explicit":
        user.manager = boss
    elif shape == "team":
        user.team = make.team(manager=boss)
    elif shape == "self_manager":
        user.team = make.team(manager=user)
    elif shape == "explicit_over_team":
        user.team = make.team(manager=other_boss)
        user.manager = boss
    session.commit()
    expr, alias = manager_id_of()
    via_sql = session.scalar(select(expr).select_from(alias).where(alias.id == user.id))
    expected = manager_of(user)
    assert via_sql == (expected.id if expected else None)


def test_reminders_of_a_finished_holding_are_cancelled(make, pool, rep, manager):
    cust = make.customer(pool, owner=rep, claimed_at=NOW - timedelta(days=5))
    kept = make.customer(pool, owner=rep, claimed_at=NOW - timedelta(days=5))
    plan = make.reminder(rep, customer=cust, kind="next_contact", due_at=NOW + timedelta(days=1),
                         created_at=NOW - timedelta(days=1))  # fmt: skip
    esc = make.reminder(manager, customer=cust, kind="overdue_escalation", created_at=NOW - timedelta(days=1))
    note = make.reminder(rep, customer=cust, kind="duplicate", created_at=NOW - timedelta(days=1))
    other = make.reminder(rep, customer=kept, kind="custom", created_at=NOW - timedelta(days=1))
    # Released back to the pool: the holding ended.
    db.session.execute(update(Customer).where(Customer.id == cust.id).values(owner_id=None))
    signals.ownership_changed.send(None, session=db.session, customer_ids=[cust.id], now=NOW)
    db.session.commit()
    for r in (plan, esc, note, other):
        db.session.refresh(r)
    assert plan.status == "cancelled" and esc.status == "cancelled"
    assert note.status == "open"  # a notice, not holding work
    assert other.status == "open"


def test_reclaim_starts_a_new_holding_and_old_reminders_go(make, pool, rep):
    cust = make.customer(pool, owner=rep, claimed_at=NOW - timedelta(days=10))
    old = make.reminder(rep, customer=cust, kind="custom", created_at=NOW - timedelta(days=9))
    db.session.execute(
        update(Customer)
        .where(Customer.id == cust.id)
        .values(claimed_at=NOW - timedelta(hours=1), holding_no=2)
    )
    db.session.commit()
    assert _gen().cancelled == 1
    db.session.refresh(old)
    assert old.status == "cancelled"


def test_custom_reminder_validation(session, make, pool, rep):
    cust = make.customer(pool, owner=rep)
    with pytest.raises(services.ReminderError, match="请填写提醒内容"):
        services.add_custom(session, rep, title=" ", due_at=NOW + timedelta(days=1), now=NOW)
    with pytest.raises(services.ReminderError, match="晚于现在"):
        services.add_custom(session, rep, title="发报价", due_at=NOW - timedelta(days=1), now=NOW)
    with pytest.raises(services.ReminderError, match="不能超过 200"):
        services.add_custom(session, rep, title="报" * 201, due_at=NOW + timedelta(days=1), now=NOW)
    stranger = make.user(Role.REP)
    with pytest.raises(services.ReminderError, match="自己团队"):
        services.add_custom(
            session, stranger, title="x", due_at=NOW + timedelta(days=1), now=NOW, for_user=rep
        )
    r = services.add_custom(
        session, rep, title="下周三发报价", due_at=NOW + timedelta(days=8), now=NOW, customer=cust
    )
    session.commit()
    assert r.kind == "custom" and r.created_by_id == rep.id and r.customer_id == cust.id
    assert session.get(User, rep.id) is not None
