"""Notices (SPEC §2): the previous owner is told when a customer is recycled away, and why; a rep is told
when customers are assigned or transferred to them — manually, in bulk, by auto-assign or a departure
handover — once each."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import AssignStrategy, Reminder, ReminderKind, Role, RuleKind
from crm.pool import services
from crm.pool.autoassign import auto_assign
from crm.recycle.sweep import sweep
from tests.recycle_support import add_rule, sh

T0 = sh(2026, 3, 2, 9, 0)


def _notices(user, kind):
    return list(
        db.session.scalars(select(Reminder).where(Reminder.user_id == user.id, Reminder.kind == kind))
    )


def test_the_previous_owner_is_told_once_when_a_customer_is_recycled_and_why(make, rep):
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    with clock.frozen(T0):
        customer = make.customer(pool, owner=rep, claimed_at=T0)
    for at in (T0 + timedelta(days=7), T0 + timedelta(days=7, minutes=1), T0 + timedelta(days=8)):
        sweep(db.session, at)
    (notice,) = _notices(rep, ReminderKind.RECYCLED)
    assert notice.customer_id == customer.id and customer.name in notice.title
    assert "7 天未跟进" in notice.body


def test_a_manual_assignment_tells_the_receiver_once(app, make, rep, manager, api):
    pool = make.pool(members=[rep], admins=[manager])
    customer = make.customer(pool)
    resp = api(make.token(manager)).post(f"/api/v1/customers/{customer.id}/assign", json={"user_id": rep.id})
    assert resp.status_code == 200
    (notice,) = _notices(rep, ReminderKind.ASSIGNED)
    assert (
        notice.customer_id == customer.id and customer.name in notice.title and manager.name in notice.title
    )


def test_a_bulk_transfer_is_one_summary_and_nothing_for_oneself(make, rep, manager):
    teammate = make.user(Role.REP, team=rep.team)
    pool = make.pool(members=[rep, teammate], admins=[manager])
    customers = [make.customer(pool, owner=rep) for _ in range(3)]
    services.assign(db.session, [c.id for c in customers], teammate, manager, clock.now())
    (notice,) = _notices(teammate, ReminderKind.ASSIGNED)
    assert "3 个客户" in notice.title and customers[0].name in notice.body
    services.assign(db.session, [make.customer(pool).id], manager, manager, clock.now())
    assert _notices(manager, ReminderKind.ASSIGNED) == []


def test_a_departure_handover_and_auto_assign_tell_the_receiver(make, rep, manager):
    leaver = make.user(Role.REP, team=rep.team)
    pool = make.pool(members=[rep, leaver], admins=[manager], auto_assign_strategy=AssignStrategy.ROUND_ROBIN)
    make.customer(pool, owner=leaver)
    services.move_all_customers(db.session, leaver, manager, clock.now(), to_user=rep)
    assert len(_notices(rep, ReminderKind.ASSIGNED)) == 1
    fresh = make.customer(pool)
    user = auto_assign(db.session, fresh.id, clock.now())
    assert user is not None
    assert any(n.customer_id == fresh.id for n in _notices(user, ReminderKind.ASSIGNED))
