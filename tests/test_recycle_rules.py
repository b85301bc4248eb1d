"""Each rule kind to the minute (due − 1 minute: kept; due: recycled), exemptions, extension, nurture, and the
customer-page due time agreeing with the sweep."""

from __future__ import annotations

import os
import random
from datetime import timedelta

import pytest

from crm import clock
from crm.extensions import db
from crm.models import EventKind, Opportunity, Role, RuleKind, Stage
from crm.recycle import engine
from crm.recycle.sweep import sweep
from tests.recycle_support import MINUTE, add_rule, fresh, ledger, sh

T0 = sh(2026, 3, 2, 9, 0)  # a Monday
DAY = timedelta(days=1)


@pytest.fixture
def setup(make):
    with clock.frozen(T0):
        rep = make.user(Role.REP, name="小李")
        pool = make.pool(members=[rep])
    return rep, pool


def _customer(make, pool, rep, **fields):
    with clock.frozen(T0):
        return make.customer(pool, owner=rep, claimed_at=T0, **fields)


def _assert_recycled_exactly_at(customer, due, rule):
    info = engine.due_info(db.session, fresh(customer), due - MINUTE)
    assert info.due is not None and info.due.due_at == due and info.due.rule.id == rule.id
    sweep(db.session, due - MINUTE)
    assert fresh(customer).owner_id is not None, "recycled one minute early"
    sweep(db.session, due)
    c = fresh(customer)
    assert c.owner_id is None
    rows = ledger(customer.id, EventKind.RECYCLED)
    assert len(rows) == 1 and rows[0].rule_id == rule.id and rows[0].at == due
    assert rule_label(rule) in rows[0].reason


def rule_label(rule):
    return engine.RuleDef.from_model(rule).label


@pytest.mark.parametrize(
    "kind, fields, facts, due",
    [
        (RuleKind.NO_FOLLOWUP, {"days": 7}, {"last_followup_at": T0 + DAY}, T0 + 8 * DAY),
        (RuleKind.NO_FOLLOWUP, {"days": 7}, {}, T0 + 7 * DAY),
        (RuleKind.NO_FIRST_CONTACT, {"hours": 48}, {}, T0 + 2 * DAY),
        (RuleKind.NO_STAGE_PROGRESS, {"days": 30}, {"last_stage_change_at": T0 + 2 * DAY}, T0 + 32 * DAY),
        (RuleKind.NO_DEAL, {"days": 20}, {}, T0 + 20 * DAY),
        (RuleKind.NURTURE_EXPIRY, {}, {"nurture_until": T0 + 5 * DAY, "nurture_set_at": T0}, T0 + 5 * DAY),
    ],
)
def test_each_rule_kind_recycles_exactly_at_its_due_minute(make, setup, kind, fields, facts, due):
    rep, pool = setup
    rule = add_rule(pool, kind, **fields)
    customer = _customer(make, pool, rep, **facts)
    _assert_recycled_exactly_at(customer, due, rule)


def test_working_day_rule_counts_across_golden_week_and_the_make_up_saturday(make, setup):
    rep, pool = setup
    rule = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, day_kind="working")
    customer = _customer(make, pool, rep, last_followup_at=sh(2026, 9, 29, 10, 0))
    # Sep 30, Oct 8, 9, 10 (调休 Saturday), 12, 13, 14 → Wed Oct 14 10:00 (not Oct 6 on the calendar).
    _assert_recycled_exactly_at(customer, sh(2026, 10, 14, 10, 0), rule)


def test_only_real_touches_reset_the_clock(make, setup):
    rep, pool = setup
    rule = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    customer = _customer(make, pool, rep)
    c = fresh(customer)
    c.notes, c.updated_at = "看过、改过字段", T0 + 5 * DAY  # viewing / editing is not a touch
    db.session.commit()
    _assert_recycled_exactly_at(customer, T0 + 7 * DAY, rule)


def test_no_first_contact_stops_after_the_first_contact(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_FIRST_CONTACT, hours=48)
    customer = _customer(make, pool, rep, first_contact_at=T0 + DAY)
    sweep(db.session, T0 + 30 * DAY)
    assert fresh(customer).owner_id == rep.id


def test_no_deal_stops_once_won_in_this_holding(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_DEAL, days=20, exclude_protected=False)
    customer = _customer(make, pool, rep, won_at=T0 + 3 * DAY)
    sweep(db.session, T0 + 60 * DAY)
    assert fresh(customer).owner_id == rep.id


def test_approved_extension_moves_the_due_time(make, setup):
    rep, pool = setup
    rule = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    customer = _customer(make, pool, rep)
    from crm.recycle import services

    manager = make.user(Role.MANAGER)
    fresh(customer)
    rep_db = db.session.get(type(rep), rep.id)
    rep_db.manager_id = manager.id
    db.session.commit()
    req = services.request_extension(db.session, customer.id, rep_db, 3, "客户出差,下周回来", T0 + 6 * DAY)
    services.decide_extension(db.session, req.id, manager, True, T0 + 6 * DAY)
    db.session.commit()
    assert fresh(customer).extension_days == 3
    kinds = [e.kind for e in ledger(customer.id)]
    assert EventKind.EXTENSION_REQUESTED in kinds and EventKind.EXTENDED in kinds
    _assert_recycled_exactly_at(customer, T0 + 10 * DAY, rule)


def test_protected_customers_are_never_recycled_and_deal_protection_ends(make, setup):
    rep, pool = setup
    rule = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    protected = _customer(make, pool, rep, protected_until=T0 + 100 * DAY)
    won = _customer(make, pool, rep, won_at=T0 + DAY)  # protection: 30 days from the deal
    sweep(db.session, T0 + 20 * DAY)
    assert fresh(protected).owner_id == rep.id and fresh(won).owner_id == rep.id
    info = engine.due_info(db.session, fresh(won), T0 + 20 * DAY)
    assert info.due.due_at == T0 + 31 * DAY and info.due.protected_until == T0 + 31 * DAY
    _assert_recycled_exactly_at(won, T0 + 31 * DAY, rule)
    assert fresh(protected).owner_id == rep.id


def test_rule_that_does_not_exclude_protected_customers_recycles_them(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, exclude_protected=False)
    customer = _customer(make, pool, rep, protected_until=T0 + 100 * DAY)
    sweep(db.session, T0 + 7 * DAY)
    assert fresh(customer).owner_id is None


def test_open_opportunity_at_or_past_the_stage_excludes_the_customer(make, setup):
    rep, pool = setup
    stages = db.session.query(Stage).order_by(Stage.position).all()
    quoted = next(s for s in stages if s.name == "已报价")
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, exclude_stage_id=quoted.id)
    past = _customer(make, pool, rep)
    before = _customer(make, pool, rep)
    for customer, stage in ((past, "谈判中"), (before, "有意向")):
        db.session.add(Opportunity(customer_id=customer.id, owner_id=rep.id, name="商机",
                                   stage_id=next(s.id for s in stages if s.name == stage), status="open",
                                   stage_changed_at=T0, created_at=T0))  # fmt: skip
    db.session.commit()
    sweep(db.session, T0 + 7 * DAY)
    assert fresh(past).owner_id == rep.id
    assert fresh(before).owner_id is None


def test_rules_narrowed_by_grade_and_kind(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=3, grades=["C"], kinds=["company"])
    c_grade = _customer(make, pool, rep, grade="C", kind="company")
    a_grade = _customer(make, pool, rep, grade="A", kind="company")
    person = _customer(make, pool, rep, grade="C", kind="person")
    sweep(db.session, T0 + 3 * DAY)
    assert fresh(c_grade).owner_id is None
    assert fresh(a_grade).owner_id == rep.id and fresh(person).owner_id == rep.id


def test_nurture_pauses_other_rules_and_a_follow_up_since_cancels_the_expiry(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, position=0)
    add_rule(pool, RuleKind.NURTURE_EXPIRY, position=1)
    nurtured = _customer(make, pool, rep, nurture_until=T0 + 30 * DAY, nurture_set_at=T0 + DAY)
    followed = _customer(make, pool, rep, nurture_until=T0 + 30 * DAY, nurture_set_at=T0 + DAY,
                         last_followup_at=T0 + 10 * DAY)  # fmt: skip
    sweep(db.session, T0 + 29 * DAY)  # the 7-day rule is paused
    assert fresh(nurtured).owner_id == rep.id and fresh(followed).owner_id == rep.id
    sweep(db.session, T0 + 30 * DAY)
    assert fresh(nurtured).owner_id is None
    assert ledger(nurtured.id, EventKind.RECYCLED)[0].reason == "长期培育到期"
    # Followed up since: no expiry; the other rules resume from the nurture date.
    assert fresh(followed).owner_id == rep.id
    info = engine.due_info(db.session, fresh(followed), T0 + 30 * DAY)
    assert info.due.due_at == T0 + 37 * DAY


def test_earliest_due_rule_wins_and_is_explained(make, setup):
    rep, pool = setup
    add_rule(pool, RuleKind.NO_STAGE_PROGRESS, days=30, position=0)
    follow = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, position=1)
    customer = _customer(make, pool, rep, last_followup_at=T0 + 2 * DAY)
    info = engine.due_info(db.session, fresh(customer), T0 + 3 * DAY)
    assert info.due.rule.id == follow.id
    assert info.summary() == "7 天未跟进 → 2026-03-11 09:00 回收"
    assert info.due.anchor_fact == "最后一次跟进"


def test_customer_page_due_time_agrees_with_the_sweep(make, setup):
    """Random facts and rules: due_info(c, t).due ≤ t exactly when the sweep at t recycles c."""
    rep, pool = setup
    rng = random.Random(7)
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=5, day_kind="working", position=0)
    add_rule(pool, RuleKind.NO_FIRST_CONTACT, hours=30, position=1)
    add_rule(pool, RuleKind.NO_STAGE_PROGRESS, days=9, position=2)
    customers = []
    for _ in range(40):
        offset = lambda: T0 + timedelta(minutes=rng.randrange(0, 6 * 24 * 60))  # noqa: E731
        facts = {"last_followup_at": offset() if rng.random() < 0.6 else None,
                 "first_contact_at": offset() if rng.random() < 0.5 else None,
                 "last_stage_change_at": offset(), "extension_days": rng.choice([0, 0, 2])}  # fmt: skip
        customers.append(_customer(make, pool, rep, **facts))
    at = T0 + 4 * DAY + timedelta(hours=5)
    expected = {c.id for c in customers if engine.due_info(db.session, fresh(c), at).overdue}
    # extension values come from approved requests; emulate them so the sweep sees the same data
    from crm.models import ExtensionRequest

    for c in customers:
        if fresh(c).extension_days:
            db.session.add(ExtensionRequest(customer_id=c.id, requester_id=rep.id, holding_no=1, days=2,
                                            reason="测试", status="approved", created_at=T0))  # fmt: skip
    db.session.commit()
    result = sweep(db.session, at)
    assert set(result.customer_ids) == expected
    assert 0 < len(expected) < len(customers)


def test_preview_counts_agree_with_each_customers_due_time(make, setup):
    """The preview's per-day counts equal what due_info says for every customer (calendar arithmetic, working-day
    cutoffs, protection, extensions)."""
    rep, pool = setup
    rng = random.Random(11)
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=5, position=0, warn_days=2)
    add_rule(pool, RuleKind.NO_STAGE_PROGRESS, days=6, day_kind="working", position=1)
    customers = []
    for _ in range(40):
        offset = lambda: T0 + timedelta(minutes=rng.randrange(0, 8 * 24 * 60))  # noqa: E731
        facts = {"last_followup_at": offset() if rng.random() < 0.7 else None, "last_stage_change_at": offset(),
                 "protected_until": T0 + timedelta(days=rng.choice([9, 11])) if rng.random() < 0.2 else None}  # fmt: skip
        customers.append(_customer(make, pool, rep, **facts))
    now = T0 + 6 * DAY + timedelta(hours=3, minutes=17)
    preview = engine.preview(db.session, pool.id, engine.active_rules(db.session, pool.id), now)
    expected_now, expected_days, warned = 0, {}, 0
    today = clock.local_today(None, now)
    for c in customers:
        info = engine.due_info(db.session, fresh(c), now)
        due = info.due.due_at
        if due <= now:
            expected_now += 1
        else:
            day = clock.local(due).date()
            if (day - today).days <= 7:
                expected_days[day] = expected_days.get(day, 0) + 1
        warn_rule = next(r for r in info.rules if r.rule.kind == RuleKind.NO_FOLLOWUP)
        warned += bool(
            not info.overdue and info.protected_until is None and warn_rule.warn_at <= now < warn_rule.due_at
        )
    assert preview.due_now == expected_now
    assert {d: n for d, n in preview.per_day if n} == expected_days
    assert preview.warned_now == warned
    assert preview.owned == len(customers)

    # The sample is taken from the earliest buckets, in bucket order, whichever buckets it spans.
    def bucket(c):
        due = engine.due_info(db.session, fresh(c), now).due.due_at
        days = (clock.local(due).date() - today).days
        return 0 if due <= now else (days + 1 if days <= 7 else None)

    buckets = {c.id: bucket(c) for c in customers}
    in_horizon = sorted(b for b in buckets.values() if b is not None)
    for size in (1, expected_now + 1, 10, 100):
        sample = engine.preview(
            db.session, pool.id, engine.active_rules(db.session, pool.id), now, sample_size=size
        )
        got = [buckets[s["customer_id"]] for s in sample.sample]
        assert got == in_horizon[: min(size, len(in_horizon))]
        assert [s["when"] == "立即" for s in sample.sample] == [b == 0 for b in got]


def test_preview_split_over_the_cores_counts_the_same_as_one_scan(make, setup, monkeypatch):
    """A large pool's counting scan runs as id ranges at once (child processes on SQLite, connections on
    PostgreSQL); forced on here for a small pool, the preview is the same as from one statement."""
    rep, pool = setup
    rng = random.Random(5)
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=5, position=0, warn_days=2)
    add_rule(pool, RuleKind.NO_STAGE_PROGRESS, days=6, day_kind="working", position=1)
    for _ in range(30):
        at = T0 + timedelta(minutes=rng.randrange(0, 8 * 24 * 60))
        _customer(make, pool, rep, last_followup_at=at, last_stage_change_at=at)
    db.session.commit()
    now = T0 + 6 * DAY + timedelta(hours=3)
    rules = engine.active_rules(db.session, pool.id)
    whole = engine.preview(db.session, pool.id, rules, now)
    assert engine._scan_ranges(db.session, pool.id) == []  # a small pool: one statement
    monkeypatch.setattr(engine, "SPLIT_SCAN_MIN_SPAN", 1)
    ranges = engine._scan_ranges(db.session, pool.id)
    assert len(ranges) >= 2 or (os.cpu_count() or 1) < 2
    split = engine.preview(db.session, pool.id, rules, now)
    assert (split.owned, split.due_now, split.warned_now, split.per_day) == (
        whole.owned,
        whole.due_now,
        whole.warned_now,
        whole.per_day,
    )
    assert 0 < whole.due_now < whole.owned
