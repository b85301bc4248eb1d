"""Assign / transfer (分配/转移), return to pool, and departures (离职/休假交接): rights, caps, ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, EventKind, PoolEvent, Role, User
from crm.pool import services


@pytest.fixture(autouse=True)
def _request_context(app):
    with app.test_request_context():
        yield


def assign(ids, to_user, actor, **kwargs):
    to_user = db.session.get(User, to_user.id) if to_user is not None else None
    return services.assign(db.session, ids, to_user, db.session.get(User, actor.id), clock.now(), **kwargs)


def owner_of(customer) -> int | None:
    db.session.expire_all()
    return db.session.get(Customer, customer.id).owner_id


def events(kind):
    return db.session.scalars(select(PoolEvent).where(PoolEvent.kind == kind).order_by(PoolEvent.id)).all()


def test_manager_assigns_pool_customers_to_a_team_member_with_a_ledger_row_each(make, rep, manager):
    pool = make.pool(members=[rep])
    a, b = make.customer(pool), make.customer(pool)
    result = assign([a.id, b.id], rep, manager, note="重点跟进")
    assert result.assigned == [a.id, b.id] and not result.refused
    assert owner_of(a) == rep.id and owner_of(b) == rep.id
    rows = events(EventKind.ASSIGNED)
    assert [(r.customer_id, r.actor_id, r.to_user_id, r.from_user_id, r.note) for r in rows] == [
        (a.id, manager.id, rep.id, None, "重点跟进"), (b.id, manager.id, rep.id, None, "重点跟进"),
    ]  # fmt: skip
    assert db.session.get(Customer, a.id).holding_no == 1


def test_transfer_moves_an_owned_customer_and_records_from_whom(make, rep, manager):
    colleague = make.user(Role.REP, team=rep.team, name="小赵")
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep, holding_followups=3)
    services.transfer(db.session, [customer.id], colleague, manager, clock.now())
    assert owner_of(customer) == colleague.id
    (row,) = events(EventKind.TRANSFERRED)
    assert (row.from_user_id, row.to_user_id, row.holding_followups, row.holding_no) == (
        rep.id,
        colleague.id,
        3,
        2,
    )
    fresh = db.session.get(Customer, customer.id)
    assert fresh.last_owner_id == rep.id and fresh.holding_followups == 0


def test_the_receivers_cap_holds_for_the_whole_batch(make, manager):
    rep = make.user(Role.REP, name="小孙", cap=3, team=manager.team)
    pool = make.pool(members=[rep])
    make.customer(pool, owner=rep)
    batch = [make.customer(pool).id for _ in range(3)]
    with pytest.raises(services.PoolRefusal) as info:
        assign(batch, rep, manager)
    assert info.value.code == "holding_cap"
    assert "小孙 已持有 1/3 个客户,再接收 3 个会超过保有量上限(还可接收 2 个)" in info.value.message
    assert all(owner_of(db.session.get(Customer, cid)) is None for cid in batch)


def test_a_manager_may_override_the_cap_and_the_ledger_says_so(make, manager):
    rep = make.user(Role.REP, cap=1, team=manager.team)
    pool = make.pool(members=[rep])
    make.customer(pool, owner=rep)
    target = make.customer(pool)
    result = assign([target.id], rep, manager, override_cap=True)
    assert result.override_used
    (row,) = events(EventKind.ASSIGNED)[-1:]
    assert row.data == {"override_cap": True} and row.result == "突破保有量上限分配"
    # Without need, asking for the override changes nothing in the ledger.
    roomy = make.user(Role.REP, cap=10, team=manager.team)
    other = make.customer(pool)
    assert not assign([other.id], roomy, manager, override_cap=True).override_used
    assert events(EventKind.ASSIGNED)[-1].data is None


def test_a_pool_admin_who_is_a_rep_cannot_override_or_assign_to_themselves(make, rep):
    ops = make.user(Role.REP, name="运营小林")
    pool = make.pool(members=[rep], admins=[ops])
    customer = make.customer(pool)
    with pytest.raises(services.PoolRefusal) as info:
        assign([customer.id], rep, ops, override_cap=True)
    assert info.value.code == "forbidden"
    with pytest.raises(services.PoolRefusal) as info:
        assign([customer.id], ops, ops)
    assert info.value.code == "forbidden"
    assert assign([customer.id], rep, ops).assigned == [customer.id]


def test_a_pool_admin_assigns_only_to_members_of_that_pool(make, rep):
    ops = make.user(Role.REP)
    outsider = make.user(Role.REP, name="外人")
    pool = make.pool(members=[rep], admins=[ops])
    customer = make.customer(pool)
    with pytest.raises(services.PoolRefusal) as info:
        assign([customer.id], outsider, ops)
    assert info.value.code == "forbidden" and "外人" in info.value.message
    assert owner_of(customer) is None


def test_reps_cannot_assign_and_managers_cannot_reach_other_teams(make, rep, manager):
    other_manager = make.user(Role.MANAGER)
    other_team = make.team("二组", manager=other_manager)
    stranger = make.user(Role.REP, team=other_team)
    pool = make.pool(members=[rep, stranger])
    customer = make.customer(pool)
    with pytest.raises(services.PoolRefusal):
        assign([customer.id], stranger, rep)
    with pytest.raises(services.PoolRefusal) as info:
        assign([customer.id], stranger, manager)  # across teams without rights
    assert info.value.code == "forbidden"
    theirs = make.customer(pool, owner=stranger)
    with pytest.raises(services.PoolRefusal) as info:
        assign([theirs.id], rep, manager)
    assert info.value.message == "你不能转移其他团队的客户。"
    assert owner_of(customer) is None and owner_of(theirs) == stranger.id


def test_inactive_away_and_missing_receivers_are_refused(make, rep, manager):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    gone = make.user(Role.REP, team=manager.team, name="老周")
    gone.active = False
    away = make.user(Role.REP, team=manager.team, name="小吴")
    away.away_until = clock.now() + timedelta(days=3)
    db.session.commit()
    for receiver, code in ((gone, "inactive_user"), (away, "user_away"), (None, "not_found")):
        with pytest.raises(services.PoolRefusal) as info:
            assign([customer.id], receiver, manager)
        assert info.value.code == code
    assert owner_of(customer) is None


def test_bulk_reports_what_could_not_move_and_moves_the_rest(make, rep, manager):
    senior_only = make.customer(make.pool(members=[rep]), senior_only=True)
    pool = make.pool(members=[rep])
    ok = make.customer(pool)
    mine = make.customer(pool, owner=rep)
    result = assign([ok.id, mine.id, senior_only.id, 987654], rep, manager)
    assert result.assigned == [ok.id]
    assert {cid: r.code for cid, r in result.refused.items()} == {
        mine.id: "taken", senior_only.id: "senior_only", 987654: "not_found",
    }  # fmt: skip


def test_empty_or_oversized_batches_are_refused(make, manager, rep):
    with pytest.raises(services.PoolRefusal) as info:
        assign([], rep, manager)
    assert info.value.code == "invalid"
    with pytest.raises(services.PoolRefusal) as info:
        assign(range(1, 502), rep, manager)
    assert "最多分配 500" in info.value.message


def test_return_to_pool_puts_customers_back_in_their_home_pools(make, rep, manager):
    east, south = make.pool(members=[rep]), make.pool(members=[rep])
    a, b = make.customer(east, owner=rep), make.customer(south, owner=rep)
    result = services.return_to_pool(db.session, [a.id, b.id], manager, clock.now(), "其他", "主管收回")
    assert sorted(result.assigned) == sorted([a.id, b.id])
    db.session.expire_all()
    assert (db.session.get(Customer, a.id).pool_id, db.session.get(Customer, b.id).pool_id) == (
        east.id,
        south.id,
    )
    assert {(r.customer_id, r.pool_id, r.from_user_id) for r in events(EventKind.RELEASED)} == {
        (a.id, east.id, rep.id), (b.id, south.id, rep.id),
    }  # fmt: skip


def test_departure_moves_every_customer_to_a_colleague_each_ledgered(make, rep, manager):
    colleague = make.user(Role.REP, team=rep.team, cap=50)
    pool = make.pool(members=[rep, colleague])
    held = [make.customer(pool, owner=rep).id for _ in range(4)]
    result = services.move_all_customers(db.session, rep, manager, clock.now(), to_user=colleague)
    assert sorted(result.assigned) == sorted(held)
    rows = events(EventKind.TRANSFERRED)
    assert sorted(r.customer_id for r in rows) == sorted(held)
    assert {(r.from_user_id, r.to_user_id, r.note) for r in rows} == {
        (rep.id, colleague.id, "小王 离职/休假交接")
    }


def test_departure_back_to_pools_uses_a_fallback_for_customers_without_one(make, rep, admin):
    pool = make.pool(members=[rep])
    fallback = make.pool()
    homed = make.customer(pool, owner=rep)
    homeless = make.customer(None, owner=rep)
    refused = services.move_all_customers(db.session, rep, admin, clock.now())
    assert refused.assigned == [homed.id] and homeless.id in refused.refused
    result = services.move_all_customers(db.session, rep, admin, clock.now(), fallback_pool_id=fallback.id)
    assert result.assigned == [homeless.id]
    db.session.expire_all()
    moved = db.session.get(Customer, homeless.id)
    assert moved.owner_id is None and moved.pool_id == fallback.id
    row = events(EventKind.RELEASED)[-1]
    assert (row.customer_id, row.to_pool_id) == (homeless.id, fallback.id)


def test_departure_respects_the_receivers_cap_unless_overridden(make, rep, manager):
    small = make.user(Role.REP, team=rep.team, cap=1)
    pool = make.pool(members=[rep])
    for _ in range(2):
        make.customer(pool, owner=rep)
    with pytest.raises(services.PoolRefusal) as info:
        services.move_all_customers(db.session, rep, manager, clock.now(), to_user=small)
    assert info.value.code == "holding_cap"
    result = services.move_all_customers(
        db.session, rep, manager, clock.now(), to_user=small, override_cap=True
    )
    assert len(result.assigned) == 2 and result.override_used


def test_only_admins_or_the_users_manager_handle_departures(make, rep):
    colleague = make.user(Role.REP)
    with pytest.raises(services.PoolRefusal) as info:
        services.move_all_customers(db.session, rep, colleague, clock.now())
    assert info.value.code == "forbidden"
