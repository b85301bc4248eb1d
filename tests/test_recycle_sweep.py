"""The sweep: warnings and escalation once even when run every minute, idempotence, the previous-owner rule
after a recycle, 高难度 after the third bounce, fair release, dry runs, concurrent sweeps, and a sweep killed
mid-run (SIGKILL) then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import (
    HARD_TAG,
    Customer,
    EventKind,
    PoolEvent,
    Reminder,
    ReminderKind,
    Role,
    RuleKind,
    SweepRun,
)
from crm.pool.services import PoolRefusal, claim
from crm.recycle.sweep import sweep
from tests.conftest import IS_PG
from tests.recycle_support import MINUTE, add_rule, count, fresh, ledger, sh

T0 = sh(2026, 3, 2, 9, 0)
DAY = timedelta(days=1)


@pytest.fixture
def team(make):
    with clock.frozen(T0):
        manager = make.user(Role.MANAGER, name="王主管")
        rep = make.user(Role.REP, name="小王")
        other = make.user(Role.REP, name="小张")
        team = make.team("华东一组", manager=manager)
        rep.team = other.team = team
        db.session.commit()
    return manager, rep, other


def _owned(make, pool, rep, n=1, **fields):
    with clock.frozen(T0):
        return [make.customer(pool, owner=rep, claimed_at=T0, **fields) for _ in range(n)]


def test_warning_and_escalation_are_sent_once_even_when_the_sweep_runs_every_minute(make, team):
    manager, rep, _other = team
    pool = make.pool(members=[rep])
    rule = add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2, escalate_days=1)
    (customer,) = _owned(make, pool, rep)
    warn_at, esc_at = T0 + 5 * DAY, T0 + 6 * DAY
    instants = [warn_at + k * MINUTE for k in range(-3, 4)] + [
        warn_at + timedelta(hours=h) for h in range(1, 24)
    ]
    instants += [esc_at + k * MINUTE for k in range(-3, 4)] + [
        esc_at + timedelta(hours=h) for h in range(1, 23)
    ]
    for at in sorted(instants):
        sweep(db.session, at)
    warned = ledger(customer.id, EventKind.WARNED)
    escalated = ledger(customer.id, EventKind.ESCALATED)
    assert [(e.at, e.to_user_id, e.rule_id) for e in warned] == [(warn_at, rep.id, rule.id)]
    assert [(e.at, e.to_user_id, e.from_user_id) for e in escalated] == [(esc_at, manager.id, rep.id)]
    reminders = db.session.scalars(select(Reminder).where(Reminder.customer_id == customer.id)).all()
    assert sorted((r.user_id, r.kind) for r in reminders) == sorted(
        [(rep.id, ReminderKind.RECYCLE_WARNING), (manager.id, ReminderKind.RECYCLE_ESCALATION)]
    )
    assert "7 天未跟进" in next(r.title for r in reminders if r.user_id == rep.id)
    assert fresh(customer).owner_id == rep.id
    # At the due minute it is recycled and the open warnings are closed.
    sweep(db.session, T0 + 7 * DAY)
    assert fresh(customer).owner_id is None
    left = {
        (r.kind, r.status)
        for r in db.session.scalars(select(Reminder).where(Reminder.customer_id == customer.id))
    }
    assert left == {
        (ReminderKind.RECYCLE_WARNING, "cancelled"),
        (ReminderKind.RECYCLE_ESCALATION, "cancelled"),
        (ReminderKind.RECYCLED, "open"),  # the previous owner is told it was recycled, and why
    }


def test_second_run_at_the_same_instant_changes_nothing(make, team):
    _manager, rep, _other = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2, escalate_days=1)
    _owned(make, pool, rep, 3)
    _owned(make, pool, rep, 2, last_followup_at=T0 + 2 * DAY)
    first = sweep(db.session, T0 + 7 * DAY + MINUTE)
    snapshot = db.session.execute(select(Customer.id, Customer.owner_id, Customer.updated_at)).all()
    events = db.session.scalar(select(func.count()).select_from(PoolEvent))
    second = sweep(db.session, T0 + 7 * DAY + MINUTE)
    assert (first.recycled, first.warned, first.escalated) == (3, 2, 0)
    assert (second.recycled, second.warned, second.escalated) == (0, 0, 0)
    assert db.session.execute(select(Customer.id, Customer.owner_id, Customer.updated_at)).all() == snapshot
    assert db.session.scalar(select(func.count()).select_from(PoolEvent)) == events


def test_cooldown_after_a_recycle_refuses_the_previous_owner_only(make, team):
    _manager, rep, other = team
    pool = make.pool(members=[rep, other], prev_owner_rule="cooldown", prev_owner_days=7)
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    a, b = _owned(make, pool, rep, 2)
    sweep(db.session, T0 + 7 * DAY)
    c = fresh(a)
    assert (c.owner_id, c.last_owner_id, c.last_released_at) == (None, rep.id, T0 + 7 * DAY)
    with pytest.raises(PoolRefusal) as refused:
        claim(db.session, a.id, db.session.get(type(rep), rep.id), T0 + 8 * DAY)
    assert refused.value.code == "cooldown"
    assert (
        claim(db.session, a.id, db.session.get(type(other), other.id), T0 + 8 * DAY).customer.owner_id
        == other.id
    )
    # After the cooldown the previous owner may claim again.
    assert (
        claim(db.session, b.id, db.session.get(type(rep), rep.id), T0 + 14 * DAY + MINUTE).customer.owner_id
        == rep.id
    )


def test_priority_window_after_a_recycle_keeps_it_for_the_previous_owner(make, team):
    _manager, rep, other = team
    pool = make.pool(members=[rep, other], prev_owner_rule="priority", prev_owner_days=3)
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    (a,) = _owned(make, pool, rep)
    sweep(db.session, T0 + 7 * DAY)
    with pytest.raises(PoolRefusal) as refused:
        claim(db.session, a.id, db.session.get(type(other), other.id), T0 + 8 * DAY)
    assert refused.value.code == "priority_window"
    result = claim(db.session, a.id, db.session.get(type(rep), rep.id), T0 + 8 * DAY)
    assert result.customer.owner_id == rep.id
    assert ledger(a.id)[-1].kind == EventKind.RECLAIMED


def test_third_bounce_within_90_days_tags_hard_and_senior_only(make, team):
    _manager, rep, other = team
    senior = make.user(Role.REP, cap=30, senior=True)
    pool = make.pool(members=[rep, other, senior])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    (customer,) = _owned(make, pool, rep)
    at = T0
    for bounce in range(1, 4):
        at = at + 7 * DAY
        result = sweep(db.session, at)
        c = fresh(customer)
        assert c.owner_id is None
        tags = [t.name for t in c.tags]
        assert (HARD_TAG in tags) == (bounce == 3) and c.senior_only == (bounce == 3)
        assert result.hard_tagged == (1 if bounce == 3 else 0)
        if bounce < 3:
            claim(db.session, customer.id, db.session.get(type(rep), rep.id), at + MINUTE)
            at = at + MINUTE
    with pytest.raises(PoolRefusal) as refused:
        claim(db.session, customer.id, db.session.get(type(other), other.id), at + DAY)
    assert refused.value.code == "senior_only"
    assert claim(db.session, customer.id, db.session.get(type(senior), senior.id), at + DAY).customer.owner_id


def test_rule_target_pool_with_fair_release_hides_customers_until_the_next_release(make, team):
    _manager, rep, _other = team
    silent = make.pool(name="沉默客户池", fair_release=True, release_times=["10:00", "15:00"])
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_STAGE_PROGRESS, days=30, target_pool_id=silent.id)
    (customer,) = _owned(make, pool, rep)
    due = T0 + 30 * DAY  # 09:00 local
    sweep(db.session, due)
    c = fresh(customer)
    assert (c.owner_id, c.pool_id, c.visible_from) == (None, silent.id, sh(2026, 4, 1, 10, 0))
    row = ledger(customer.id, EventKind.RECYCLED)[0]
    assert (row.pool_id, row.to_pool_id, row.from_user_id, row.holding_followups) == (
        pool.id,
        silent.id,
        rep.id,
        0,
    )


def test_dry_run_counts_exactly_and_saves_nothing(make, team):
    _manager, rep, _other = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2)
    _owned(make, pool, rep, 4)
    _owned(make, pool, rep, 1, last_followup_at=T0 + 2 * DAY)
    result = sweep(db.session, T0 + 7 * DAY, dry_run=True)
    assert (result.recycled, result.warned) == (4, 1)
    assert count(EventKind.RECYCLED) == 0 and count(EventKind.WARNED) == 0
    assert (
        db.session.scalar(select(func.count()).select_from(Customer).where(Customer.owner_id.is_(None))) == 0
    )
    run = db.session.get(SweepRun, result.run_id)
    assert (run.dry_run, run.status, run.recycled) == (True, "ok", 4)


def test_two_sweeps_at_once_write_each_ledger_row_once(app, make, team):
    _manager, rep, _other = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2)
    due = [c.id for c in _owned(make, pool, rep, 30)]
    _owned(make, pool, rep, 10, last_followup_at=T0 + 2 * DAY)
    db.session.remove()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        with app.app_context():
            try:
                barrier.wait()
                results.append(sweep(db.session, T0 + 7 * DAY))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(r.recycled for r in results) == [0, 30]
    assert sorted(r.warned for r in results) == [0, 10]
    per_customer = db.session.execute(
        select(PoolEvent.customer_id, func.count()).where(PoolEvent.kind == EventKind.RECYCLED)
        .group_by(PoolEvent.customer_id)
    ).all()  # fmt: skip
    assert sorted(cid for cid, _n in per_customer) == sorted(due)
    assert {n for _cid, n in per_customer} == {1}
    assert count(EventKind.WARNED) == 10


CHILD = textwrap.dedent(
    """
    import sys, time
    from crm import create_app
    from crm.extensions import db
    from crm.recycle import sweep as module
    from crm.recycle.sweep import sweep
    from crm import clock

    original = module._tag_hard

    def slow_tag_hard(*args, **kwargs):
        original(*args, **kwargs)  # the UPDATE and the ledger INSERT have run, uncommitted
        print("MID-SWEEP", flush=True)
        time.sleep(120)

    module._tag_hard = slow_tag_hard
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": sys.argv[1], "INSTANCE_PATH": sys.argv[2],
                      "SECRET_KEY": "x"})
    with app.app_context():
        sweep(db.session, clock.parse_iso(sys.argv[3]))
    """
)


def test_sweep_killed_mid_run_loses_nothing_and_a_rerun_recycles_each_exactly_once(app, make, team, tmp_path):
    _manager, rep, _other = team
    rep_id = rep.id
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    due = [c.id for c in _owned(make, pool, rep, 25)]
    kept = [c.id for c in _owned(make, pool, rep, 5, last_followup_at=T0 + 3 * DAY)]
    db.session.remove()
    at = T0 + 7 * DAY
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(script), uri, str(tmp_path / "child-instance"), at.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = child.stdout.readline()
        assert line.strip() == "MID-SWEEP", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    db.session.expire_all()
    # Nothing of the killed run is visible: no half-moved customers, no ledger rows.
    assert count(EventKind.RECYCLED) == 0
    assert (
        db.session.scalar(select(func.count()).select_from(Customer).where(Customer.owner_id.is_(None))) == 0
    )
    killed = db.session.scalars(select(SweepRun)).all()
    assert [r.status for r in killed] == ["running"]
    result = sweep(db.session, at)
    assert result.recycled == 25
    rows = ledger(kind=EventKind.RECYCLED)
    assert sorted(r.customer_id for r in rows) == sorted(due)
    owners = dict(db.session.execute(select(Customer.id, Customer.owner_id)).all())
    assert all(owners[c] is None for c in due) and all(owners[c] == rep_id for c in kept)
    assert sweep(db.session, at).recycled == 0
    # The next sweep marked the killed run abandoned in the run log.
    db.session.expire_all()
    assert db.session.get(SweepRun, killed[0].id).status == "abandoned"


def test_a_run_left_running_is_marked_abandoned_by_the_periodic_check(app, make, team):
    from crm.recycle.sweep import abandon_stale
    from workers import jobs

    now = clock.now()
    old = SweepRun(started_at=now - timedelta(hours=2), as_of=now, status="running", details={})
    recent = SweepRun(started_at=now - timedelta(minutes=1), as_of=now, status="running", details={})
    db.session.add_all([old, recent])
    db.session.commit()
    assert jobs.abandon_stale_sweeps() == 1
    db.session.expire_all()
    assert (old.status, recent.status) == ("abandoned", "running")
    assert abandon_stale(db.session, now) == 0


def test_per_rule_counts_add_up_when_two_rules_share_a_label(make, team):
    _manager, rep, _other = team
    first, second = make.pool(members=[rep]), make.pool(members=[rep])
    add_rule(first, RuleKind.NO_FOLLOWUP, days=7)  # same kind and days: the same label in both pools
    add_rule(second, RuleKind.NO_FOLLOWUP, days=7)
    _owned(make, first, rep, 4)
    _owned(make, second, rep, 3)
    result = sweep(db.session, T0 + 8 * DAY)
    assert result.recycled == 7
    assert len(result.by_rule) == 1 and sum(result.by_rule.values()) == 7


@pytest.mark.skipif(not IS_PG, reason="needs PostgreSQL")
@pytest.mark.postgres
def test_sweep_waits_for_the_advisory_lock_of_another_sweep_on_postgres(app, make, team):
    """While one sweep's transaction is open, a second one blocks on the advisory lock, then finds nothing."""
    from sqlalchemy import text

    from crm.recycle.sweep import ADVISORY_LOCK_KEY

    _manager, rep, _other = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    _owned(make, pool, rep, 5)
    holder = db.engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    done = []

    def run():
        with app.app_context():
            done.append(sweep(db.session, T0 + 7 * DAY))
            db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(1.5)
    assert thread.is_alive() and not done  # waiting for the lock
    tx.commit()
    holder.close()
    thread.join(30)
    assert done[0].recycled == 5


def test_worker_job_and_schedule_run_the_same_sweep(make, team):
    import workers.cron  # noqa: F401  (the schedule module imports and registers without error)
    from workers.jobs import recycle_sweep

    _manager, rep, _other = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7)
    (customer,) = _owned(make, pool, rep)
    assert recycle_sweep((T0 + 7 * DAY - MINUTE).isoformat())["recycled"] == 0
    assert recycle_sweep((T0 + 7 * DAY).isoformat())["recycled"] == 1
    assert fresh(customer).owner_id is None
    runs = db.session.scalars(select(SweepRun).order_by(SweepRun.id)).all()
    assert [(r.status, r.recycled) for r in runs] == [("ok", 0), ("ok", 1)]
