"""Fault test 4 (issue 17): a recycle sweep SIGKILLed at random moments 10 times (a real process each
time), then left to finish: every due customer recycled exactly once, warnings not repeated, the killed
runs marked abandoned in the run log (none left "running")."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import Customer, EventKind, PoolEvent, Reminder, ReminderKind, Role, RuleKind, SweepRun
from crm.recycle.sweep import sweep
from tests.fault_support import ROOT
from tests.recycle_support import add_rule, sh

pytestmark = pytest.mark.slow

T0 = sh(2026, 3, 2, 9, 0)
DUE = int(os.environ.get("FAULT_SWEEP_CUSTOMERS") or 600)
WARNED = DUE // 3
KILLS = 10

CHILD = textwrap.dedent(
    """
    import sys
    from crm import clock, create_app
    from crm.extensions import db
    from crm.recycle.sweep import sweep

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": sys.argv[1], "INSTANCE_PATH": sys.argv[2],
                      "SECRET_KEY": "x"})
    with app.app_context():
        db.session.execute(db.text("SELECT 1"))
        db.session.commit()
        print("READY", flush=True)
        result = sweep(db.session, clock.parse_iso(sys.argv[3]))
        print("DONE", result.recycled, flush=True)
    """
)


def _child(uri: str, tmp_path, at) -> subprocess.Popen:
    script = tmp_path / "sweep_child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(script), uri, str(tmp_path / "child-instance"), at.isoformat()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def test_sweep_sigkilled_ten_times_then_finished_recycles_each_once_and_marks_the_dead_runs(
    app, make, tmp_path
):
    manager = make.user(Role.MANAGER, name="王主管")
    rep = make.user(Role.REP, name="小王")
    team = make.team("华东一组", manager=manager)
    rep.team = team
    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2, escalate_days=1)
    with clock.frozen(T0):
        due = [make.customer(pool, owner=rep, claimed_at=T0, commit=False).id for _ in range(DUE)]
        warned = [make.customer(pool, owner=rep, claimed_at=T0 + timedelta(days=1, hours=12), commit=False).id
                  for _ in range(WARNED)]  # fmt: skip
    db.session.commit()
    rep_id = rep.id
    at = T0 + timedelta(days=7, hours=1)
    # How long a sweep of this data takes (a dry run runs the same statements, then rolls back).
    duration = sweep(db.session, at, dry_run=True).duration_ms / 1000
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    db.session.remove()
    db.engine.dispose()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    killed = completed = 0
    for _ in range(KILLS):
        child = _child(uri, tmp_path, at)
        try:
            assert child.stdout.readline().strip() == "READY", child.stderr.read()
            time.sleep(rng.uniform(0, duration * 0.8))  # mostly mid-run; a child may still finish first
            os.kill(child.pid, signal.SIGKILL)
            out, _err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        if "DONE" in out:
            completed += 1
        else:
            killed += 1
    final = _child(uri, tmp_path, at)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0 and "DONE" in out, err

    recycled = dict(db.session.execute(
        select(PoolEvent.customer_id, func.count()).where(PoolEvent.kind == EventKind.RECYCLED)
        .group_by(PoolEvent.customer_id)).all())  # fmt: skip
    warnings = dict(db.session.execute(
        select(PoolEvent.customer_id, func.count()).where(PoolEvent.kind == EventKind.WARNED)
        .group_by(PoolEvent.customer_id)).all())  # fmt: skip
    warn_reminders = db.session.scalar(
        select(func.count()).select_from(Reminder).where(Reminder.kind == ReminderKind.RECYCLE_WARNING)
    )
    runs = db.session.execute(
        select(SweepRun.status, func.count()).where(SweepRun.dry_run.is_(False)).group_by(SweepRun.status)
    ).all()
    runs = dict(runs)
    lost = [c for c in due if c not in recycled]
    duplicated = sum(n - 1 for n in recycled.values() if n > 1)
    print(f"\n[fault] sweep SIGKILL: tries={KILLS + 1} killed_mid_run={killed} completed_before_kill={completed} "
          f"lost={len(lost)} duplicated={duplicated} runs={runs} seed={seed} sweep_seconds={duration:.2f}")  # fmt: skip
    assert not lost and duplicated == 0
    assert set(recycled) == set(due)  # nothing else recycled
    owners = dict(db.session.execute(select(Customer.id, Customer.owner_id)).all())
    assert all(owners[c] is None for c in due) and all(owners[c] == rep_id for c in warned)
    assert set(warnings) == set(warned) and set(warnings.values()) == {1}  # warned once each
    assert warn_reminders == WARNED  # one reminder per warned customer, however many runs
    assert "running" not in runs  # every dead run is marked
    assert runs.get("abandoned", 0) >= 1 and runs.get("abandoned", 0) <= killed
    assert runs.get("ok", 0) == completed + 1
