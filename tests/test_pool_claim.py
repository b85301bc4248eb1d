"""Claim (领取) and release (退回公海): the limits, the refusals and what they say, and the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import ClaimCount, Customer, EventKind, PoolEvent, PrevOwnerRule, Role, User
from crm.pool import services
from tests.conftest import login

NOON = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


@pytest.fixture(autouse=True)
def _request_context(app):
    """Services translate their messages; give them a request context like a web request or job has."""
    with app.test_request_context():
        yield


def claim(customer, user, at=NOON):
    with clock.frozen(at):
        return services.claim(db.session, customer.id, db.session.get(User, user.id), clock.now())


def refusal_of(customer, user, at=NOON) -> services.PoolRefusal:
    with pytest.raises(services.PoolRefusal) as info:
        claim(customer, user, at)
    return info.value


def ledger(customer, kind=None):
    query = select(PoolEvent).where(PoolEvent.customer_id == customer.id).order_by(PoolEvent.id)
    if kind:
        query = query.where(PoolEvent.kind == kind)
    return db.session.scalars(query).all()


def test_claim_makes_the_rep_owner_starts_a_holding_and_writes_a_claimed_row(make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    result = claim(customer, rep)
    db.session.expire_all()
    customer = db.session.get(Customer, customer.id)
    assert customer.owner_id == rep.id
    assert customer.claimed_at == NOON
    assert customer.holding_no == 1
    assert (result.claims_today, result.daily_limit, result.held) == (1, 3, 1)
    (row,) = ledger(customer, EventKind.CLAIMED)
    assert (row.actor_id, row.to_user_id, row.pool_id, row.holding_no) == (rep.id, rep.id, pool.id, 1)


def test_second_claim_of_same_customer_is_refused_with_the_owner_name(make, rep):
    other = make.user(Role.REP, name="小李")
    pool = make.pool(members=[rep, other])
    customer = make.customer(pool)
    claim(customer, rep)
    refusal = refusal_of(customer, other)
    assert (refusal.code, refusal.status) == ("taken", 409)
    assert refusal.message == "已被 小王 领取。"
    assert len(ledger(customer, EventKind.CLAIMED)) == 1


def test_claiming_a_missing_or_merged_customer_is_not_found(make, rep):
    pool = make.pool(members=[rep])
    winner = make.customer(pool)
    loser = make.customer(pool, merged_into_id=winner.id)
    with pytest.raises(services.PoolRefusal) as info:
        services.claim(db.session, 999_999, rep, NOON)
    assert info.value.code == "not_found"
    refusal = refusal_of(loser, rep)
    assert (refusal.code, refusal.status, refusal.detail) == ("merged", 409, {"merged_into": winner.id})
    assert db.session.get(Customer, loser.id).owner_id is None
    assert db.session.get(Customer, winner.id).owner_id is None


def test_claiming_a_merged_id_on_the_board_opens_the_winner_and_claims_nothing(make, rep, client):
    pool = make.pool(members=[rep])
    winner = make.customer(pool)
    loser = make.customer(pool, merged_into_id=winner.id)
    login(client, rep)
    resp = client.post(f"/customers/{loser.id}/claim", data={"ctx": "board"}, headers={"HX-Request": "true"})
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == f"/customers/{winner.id}"
    assert db.session.get(Customer, winner.id).owner_id is None
    assert db.session.get(Customer, loser.id).owner_id is None


def test_a_stranger_to_the_pool_cannot_claim_nor_learn_the_owner(make, rep):
    stranger = make.user(Role.REP)
    pool = make.pool(members=[rep], name="华东区域池")
    free = make.customer(pool)
    owned = make.customer(pool, owner=rep)
    for target in (free, owned):
        refusal = refusal_of(target, stranger)
        assert (refusal.code, refusal.status) == ("not_member", 403)
        assert "小王" not in refusal.message and "华东区域池" in refusal.message
    assert db.session.get(Customer, free.id).owner_id is None


def test_team_membership_counts_and_pool_admins_may_claim(make, rep, manager):
    pool = make.pool(teams=[rep.team])
    assert claim(make.customer(pool), rep).customer.owner_id == rep.id
    admin_of_other = make.user(Role.REP)
    other_pool = make.pool(admins=[admin_of_other])
    assert claim(make.customer(other_pool), admin_of_other).customer.owner_id == admin_of_other.id


def test_daily_limit_refuses_the_fourth_claim_and_says_what_is_used(make, rep):
    pool = make.pool(members=[rep], daily_claim_limit=3, name="新线索池")
    customers = [make.customer(pool) for _ in range(4)]
    for c in customers[:3]:
        claim(c, rep)
    refusal = refusal_of(customers[3], rep)
    assert (refusal.code, refusal.status) == ("daily_limit", 429)
    assert refusal.message.startswith("今日已领 3/3")
    assert refusal.detail == {"used": 3, "limit": 3, "remaining": 0}
    assert db.session.get(Customer, customers[3].id).owner_id is None


def test_the_daily_limit_counts_in_the_teams_local_day(make, rep):
    pool = make.pool(members=[rep], daily_claim_limit=1)
    first, second = make.customer(pool), make.customer(pool)
    late_evening = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    claim(first, rep, late_evening)
    assert refusal_of(second, rep, late_evening + timedelta(minutes=20)).code == "daily_limit"  # 23:50
    claim(second, rep, late_evening + timedelta(minutes=31))  # 00:01 next local day
    # A team in another time zone counts its own day.
    new_yorker = make.user(Role.REP, team=make.team(timezone="America/New_York"))
    ny_pool = make.pool(members=[new_yorker], daily_claim_limit=1)
    a, b = make.customer(ny_pool), make.customer(ny_pool)
    new_york_midnight = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)
    claim(a, new_yorker, new_york_midnight - timedelta(minutes=10))  # 23:50 on 2 March in New York
    claim(b, new_yorker, new_york_midnight + timedelta(minutes=5))  # 3 March there (13:05 in Shanghai)


def test_the_board_counter_reads_todays_claims_in_the_teams_local_day(make):
    """The counter takes today in the default zone in one query and asks again for a team whose day differs."""
    new_yorker = make.user(Role.REP, team=make.team(timezone="America/New_York"))
    pool = make.pool(members=[new_yorker], daily_claim_limit=5)
    evening = datetime(
        2026, 3, 2, 23, 0, tzinfo=UTC
    )  # 18:00 on 2 March in New York, 07:00 on 3 March in Shanghai
    claim(make.customer(pool), new_yorker, evening - timedelta(hours=2))  # 16:00 on 2 March in New York
    claim(make.customer(pool), new_yorker, evening)
    load = services.user_load(db.session, new_yorker, pool.id, evening + timedelta(hours=6, minutes=30))
    assert (load.claims_today, load.held) == (
        0,
        2,
    )  # 00:30 on 3 March in New York (and in Shanghai): a new day
    load = services.user_load(db.session, new_yorker, pool.id, evening + timedelta(minutes=30))
    assert load.claims_today == 2  # still 2 March in New York (already 3 March in Shanghai)


def test_release_does_not_refund_the_days_claim(make, rep):
    pool = make.pool(members=[rep], daily_claim_limit=1)
    first, second = make.customer(pool), make.customer(pool)
    claim(first, rep)
    with clock.frozen(NOON):
        services.release(db.session, first.id, rep, "客户暂无需求", "客户说明年再联系采购。", clock.now())
    assert refusal_of(second, rep, NOON + timedelta(minutes=1)).code == "daily_limit"
    assert db.session.scalar(select(ClaimCount.count).where(ClaimCount.user_id == rep.id)) == 1


def test_holding_cap_refuses_and_tells_the_rep_what_is_held(make):
    rep = make.user(Role.REP, name="小张", cap=2)
    pool = make.pool(members=[rep], daily_claim_limit=10)
    make.customer(pool, owner=rep)
    claim(make.customer(pool), rep)
    target = make.customer(pool)
    refusal = refusal_of(target, rep)
    assert (refusal.code, refusal.status) == ("holding_cap", 422)
    assert refusal.message == "小张 已持有 2/2 个客户,达到保有量上限。"
    # A refused claim does not use up a daily slot.
    assert db.session.scalar(select(ClaimCount.count).where(ClaimCount.user_id == rep.id)) == 1


def test_users_without_a_level_get_the_default_cap_from_settings(make, rep):
    from crm.settings import store

    store.put(db.session, "pool", {"default_holding_cap": 1}, None, NOON)
    db.session.commit()
    pool = make.pool(members=[rep])
    claim(make.customer(pool), rep)
    assert refusal_of(make.customer(pool), rep).code == "holding_cap"


def test_disabled_pool_refuses_claims(make, rep):
    pool = make.pool(members=[rep], enabled=False, name="沉默池")
    refusal = refusal_of(make.customer(pool), rep)
    assert (refusal.code, refusal.message) == ("pool_disabled", "「沉默池」已停用,暂不能领取。")


def test_senior_only_customers_need_a_senior_level(make):
    junior = make.user(Role.REP, cap=20)
    senior = make.user(Role.REP, cap=30, senior=True)
    pool = make.pool(members=[junior, senior])
    hard = make.customer(pool, senior_only=True)
    assert refusal_of(hard, junior).code == "senior_only"
    assert claim(hard, senior).customer.owner_id == senior.id


def _released_by(make, pool, rep, released_at):
    customer = make.customer(pool, last_owner_id=rep.id, last_released_at=released_at)
    return customer


def test_cooldown_keeps_the_last_owner_away_until_it_ends(make, rep):
    other = make.user(Role.REP)
    pool = make.pool(members=[rep, other], prev_owner_rule=PrevOwnerRule.COOLDOWN, prev_owner_days=7)
    customer = _released_by(make, pool, rep, NOON - timedelta(days=2))
    refusal = refusal_of(customer, rep)
    assert refusal.code == "cooldown" and "2026-03-07 12:00" in refusal.message
    # Others may claim during the cooldown; the last owner again once it is over.
    claim(make.customer(pool), other)
    later = _released_by(make, pool, rep, NOON - timedelta(days=8))
    result = claim(later, rep)
    assert ledger(result.customer, EventKind.RECLAIMED)


def test_priority_window_lets_only_the_last_owner_claim(make, rep):
    other = make.user(Role.REP)
    pool = make.pool(members=[rep, other], prev_owner_rule=PrevOwnerRule.PRIORITY, prev_owner_days=3)
    customer = _released_by(make, pool, rep, NOON - timedelta(days=1))
    refusal = refusal_of(customer, other)
    assert (refusal.code, refusal.status) == ("priority_window", 422)
    assert "2026-03-04 12:00 后其他人可领" in refusal.message
    assert claim(customer, rep).customer.owner_id == rep.id


def test_fair_release_hides_a_customer_until_its_release_time(make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, visible_from=NOON + timedelta(hours=2))
    refusal = refusal_of(customer, rep)
    assert refusal.code == "not_released" and "03-02 14:00" in refusal.message
    assert claim(customer, rep, NOON + timedelta(hours=2)).customer.owner_id == rep.id


def test_claiming_ones_own_customer_says_so(make, rep):
    pool = make.pool(members=[rep])
    refusal = refusal_of(make.customer(pool, owner=rep), rep)
    assert refusal.code == "taken" and refusal.message == "你已经是该客户的负责人。"


# ---------------------------------------------------------------- release


def release(customer, actor, reason="联系不上", note="电话三次未接,微信未通过。", at=NOON):
    with clock.frozen(at):
        return services.release(
            db.session, customer.id, db.session.get(User, actor.id), reason, note, clock.now()
        )


def test_release_puts_the_customer_back_with_reason_note_and_holding_followups(make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep, holding_followups=2)
    release(customer, rep)
    db.session.expire_all()
    customer = db.session.get(Customer, customer.id)
    assert customer.owner_id is None and customer.pool_id == pool.id
    assert customer.last_owner_id == rep.id and customer.last_released_at == NOON
    (row,) = ledger(customer, EventKind.RELEASED)
    assert (row.from_user_id, row.reason, row.note, row.holding_followups, row.holding_no) == (
        rep.id, "联系不上", "电话三次未接,微信未通过。", 2, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "note", "field"),
    [("", "有交接说明的内容", "reason"), ("随便写的原因", "有交接说明的内容", "reason"), ("联系不上", "", "note"),
     ("联系不上", "好", "note"), ("联系不上", "长" * 1001, "note")],
)  # fmt: skip
def test_release_without_a_listed_reason_or_a_real_note_changes_nothing(make, rep, reason, note, field):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    with pytest.raises(services.PoolRefusal) as info:
        release(customer, rep, reason, note)
    assert info.value.code == "invalid" and info.value.detail["field"] == field
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id == rep.id
    assert not ledger(customer, EventKind.RELEASED)


def test_only_the_owner_or_their_manager_may_release(make, rep, manager):
    colleague = make.user(Role.REP, team=rep.team)
    pool = make.pool(members=[rep, colleague])
    customer = make.customer(pool, owner=rep)
    with pytest.raises(services.PoolRefusal) as info:
        release(customer, colleague)
    assert info.value.code == "forbidden"
    release(customer, manager)
    assert ledger(customer, EventKind.RELEASED)[0].actor_id == manager.id


def test_releasing_a_pool_customer_is_refused(make, rep):
    pool = make.pool(members=[rep])
    with pytest.raises(services.PoolRefusal) as info:
        release(make.customer(pool), rep)
    assert (info.value.code, info.value.status) == ("not_owner", 409)


def test_release_into_a_fair_release_pool_waits_for_the_next_release_time(make, rep):
    other = make.user(Role.REP)
    pool = make.pool(members=[rep, other], fair_release=True, release_times=["10:00", "15:00"])
    customer = make.customer(pool, owner=rep)
    release(customer, rep)  # at 12:00 local
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).visible_from == datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    assert refusal_of(customer, other, NOON + timedelta(hours=1)).code == "not_released"
    claim(customer, other, datetime(2026, 3, 2, 7, 0, tzinfo=UTC))


def test_next_release_time_rolls_over_to_tomorrow():
    from crm.models import Pool

    pool = Pool(fair_release=True, release_times=["10:00", "bad", "15:00"])
    evening = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 20:00 local
    assert services.next_release_at(pool, evening) == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    assert services.next_release_at(Pool(fair_release=False, release_times=["10:00"]), evening) is None


def test_ledger_rows_cannot_be_changed(make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    row = ledger(customer)[0]
    row.note = "篡改"
    with pytest.raises(Exception, match="append-only"):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(PoolEvent)) == 1
