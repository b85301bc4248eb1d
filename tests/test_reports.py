"""Dashboard numbers (crm/reports) against a small hand-built data set; every expected figure is worked
out in the comments. The team's time zone is Asia/Shanghai (UTC+8): the period 2026-03-02 … 2026-03-08
(local) is the UTC range [2026-03-01T16:00Z, 2026-03-08T16:00Z)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import EventKind, Opportunity, Role, Stage, StageChange
from crm.pool.services import record_event
from crm.reports import services
from crm.reports.filters import ReportInputError, parse_filter

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
PERIOD = {"start": "2026-03-02", "end": "2026-03-08"}


def T(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _stage(name: str) -> int:
    return db.session.scalar(select(Stage.id).where(Stage.name == name))


def _move(customer, user, to: str, at: str, frm: str | None = None, opportunity=None) -> None:
    db.session.add(StageChange(customer_id=customer.id, user_id=user.id, to_stage_id=_stage(to),
                               from_stage_id=_stage(frm) if frm else None, at=T(at),
                               opportunity_id=opportunity.id if opportunity else None))  # fmt: skip


def _opp(customer, owner, status: str, closed: str, amount: int, from_pool: bool) -> Opportunity:
    opp = Opportunity(customer_id=customer.id, owner_id=owner.id, name="商机", stage_id=_stage("成交"),
                      amount=Decimal(amount), status=status, from_pool=from_pool, stage_changed_at=T(closed),
                      created_at=T("2026-02-01T00:00"), closed_at=T(closed))  # fmt: skip
    db.session.add(opp)
    return opp


@pytest.fixture
def world(make, rep, manager, admin):
    with clock.frozen(NOW):
        pool = make.pool("华东公海", members=[rep])
        other_pool = make.pool("华南公海")
        other_rep = make.user(Role.REP, name="外组销售")
        # c1, c2 taken in the period (assigned 03-02 03:00Z); c3, c4 held since February.
        c1 = make.customer(
            pool, owner=rep, claimed_at=T("2026-03-02T03:00"), arrived_at=T("2026-02-20T03:00")
        )
        c2 = make.customer(
            pool, owner=rep, claimed_at=T("2026-03-02T03:00"), arrived_at=T("2026-02-25T03:00")
        )
        c3 = make.customer(pool, owner=rep, claimed_at=T("2026-02-01T03:00"))
        c4 = make.customer(pool, owner=rep, claimed_at=T("2026-02-01T03:00"))
        c5 = make.customer(pool, owner=rep, claimed_at=T("2026-02-01T03:00"))
        c6 = make.customer(other_pool, owner=other_rep, claimed_at=T("2026-02-01T03:00"))
        # Arrived in the period: two leads in the pool from an exhibition, one WeChat customer already won.
        u1 = make.customer(pool, arrived_at=T("2026-03-03T02:00"), channel="展会")
        make.customer(pool, arrived_at=T("2026-03-04T02:00"), channel="展会")
        make.customer(pool, owner=rep, arrived_at=T("2026-03-03T02:00"), channel="公众号",
                      won_at=T("2026-03-06T02:00"))  # fmt: skip
        # Stage moves (all by the rep unless said otherwise)
        _move(c1, rep, "新线索", "2026-03-02T02:00")
        _move(c1, rep, "初步沟通", "2026-03-03T02:00", "新线索")  # 新线索 stay 1.0 d
        _move(c1, rep, "有意向", "2026-03-04T02:00", "初步沟通")  # 初步沟通 stay 1.0 d
        _move(c1, rep, "成交", "2026-03-05T02:00", "有意向")  # 有意向 stay 1.0 d
        _move(c2, rep, "初步沟通", "2026-03-03T02:00")
        _move(c2, rep, "有意向", "2026-03-04T14:00", "初步沟通")  # 初步沟通 stay 1.5 d
        _move(c3, rep, "初步沟通", "2026-03-04T02:00")
        _move(c3, rep, "输单", "2026-03-05T02:00", "初步沟通")  # 初步沟通 stay 1.0 d
        _move(c4, rep, "新线索", "2026-03-03T02:00")
        _move(c5, rep, "成交", "2026-02-20T02:00")  # before the period: not counted
        _move(c6, other_rep, "有意向", "2026-03-04T02:00")  # another team: only the admin sees it
        # Follow-ups: f6 at 03-01T16:30Z is local Monday 03-02 00:30, inside the period.
        make.followup(c4, rep, at=T("2026-03-01T16:30"), score_at=10)  # Mon 00h
        make.followup(c3, rep, at=T("2026-03-02T17:30"), score_at=85)  # Tue 01h (local 03-03 01:30), hot
        make.followup(c1, rep, at=T("2026-03-03T01:00"), score_at=50)  # Tue 09h; c1's first contact
        make.followup(c2, rep, at=T("2026-03-04T02:00"), score_at=90)  # Wed 10h, hot; c2's first contact
        make.followup(c2, rep, at=T("2026-03-04T03:00"), score_at=90, is_fake=True)  # fake: ignored
        make.followup(c1, rep, at=T("2026-03-09T00:00"), score_at=90)  # local 03-09: after the period
        # Deals: o1 from the pool won, o2 from the pool lost, o3 not from the pool won.
        _opp(c1, rep, "won", "2026-03-05T02:00", 10000, True)
        _opp(c2, rep, "lost", "2026-03-06T02:00", 0, True)
        _opp(c3, rep, "won", "2026-03-05T02:00", 5000, False)
        # Ledger: c3 recycled into the pool in the period; a duplicate conflict on u1.
        record_event(db.session, c3, EventKind.RECYCLED, T("2026-03-06T02:00"), actor_system="rule",
                     from_user_id=rep.id, pool_id=pool.id, reason="7天未跟进")  # fmt: skip
        db.session.commit()
        conflict = make.conflict(u1, c1)
        conflict.created_at = T("2026-03-04T05:00")
        db.session.commit()
    return {"pool": pool, "other_pool": other_pool}


def _filter(user, **extra):
    return parse_filter(db.session, {**PERIOD, **extra}, user, NOW)


def test_funnel_counts_customers_reaching_each_bucket_for_the_managers_team(world, manager):
    data = services.funnel(db.session, _filter(manager))
    # reached ≥ lead: c1 c2 c3 c4 = 4; ≥ communication: c1 c2 c3 = 3 (3/4 = 75%);
    # ≥ intent: c1 c2 = 2 (2/3); deal: c1 = 1 (1/2); lost: c3 = 1 (1/4 of the first step). c5 moved before.
    assert [(s.bucket, s.count) for s in data["steps"]] == [
        ("lead", 4),
        ("communication", 3),
        ("intent", 2),
        ("deal", 1),
    ]
    assert [s.rate for s in data["steps"]] == [None, 0.75, pytest.approx(2 / 3), 0.5]
    assert data["lost"] == 1 and data["lost_rate"] == 0.25


def test_funnel_for_the_admin_includes_other_teams(world, admin):
    data = services.funnel(db.session, _filter(admin))
    # + c6 (有意向, another team): lead 5, communication 4, intent 3, deal 1.
    assert [s.count for s in data["steps"]] == [5, 4, 3, 1]


def test_per_rep_numbers(world, manager, rep):
    data = services.reps(db.session, _filter(manager))
    row = next(r for r in data["rows"] if r.user_id == rep.id)
    assert row.new_customers == 2  # c1 and c2 assigned on 03-02
    assert (row.deals, row.amount) == (2, Decimal("15000"))  # o1 10000 + o3 5000; o2 was lost
    assert row.followups == 4  # f6 f1 f2 f3 (the fake one and the one on 03-09 local do not count)
    assert row.per_day == round(4 / 7, 2)
    assert row.hot_share == 0.5  # f1 (85) and f3 (90) are ≥ 80 of 4
    # 初步沟通: (1.0 + 1.5 + 1.0) / 3 = 1.1666… → 1.2 d; 新线索 1.0 d; 有意向 1.0 d
    assert row.stage_days == {_stage("新线索"): 1.0, _stage("初步沟通"): 1.2, _stage("有意向"): 1.0}
    assert all(r.name != "外组销售" for r in data["rows"])


def test_heatmap_buckets_in_shanghai_time(world, manager, rep):
    data = services.heatmap(db.session, _filter(manager))
    grid = data["grid"]
    # 2026-03-02T17:30Z is Tuesday 01:30 in Shanghai (Monday 17:30 UTC): weekday 1, hour 1.
    assert grid[1][1] == 1 and grid[0][17] == 0
    assert grid[0][0] == 1  # 03-01T16:30Z → Monday 00:30 local
    assert grid[1][9] == 1 and grid[2][10] == 1
    assert sum(map(sum, grid)) == 4
    ((name, uid, cells),) = data["reps"]
    assert uid == rep.id and cells == {"2026-03-02": 1, "2026-03-03": 2, "2026-03-04": 1}


def test_pool_kpis_for_the_manager(world, manager):
    data = services.pools(db.session, _filter(manager))
    row = next(r for r in data["rows"] if r.name == "华东公海")
    # The manager sees the team's moves only: inflow = c3 recycled (1); the leads created by intake have no
    # team member on them. Outflow = c1 and c2 assigned (2).
    assert (row.inflow, row.outflow) == (1, 2)
    assert row.stock == 2  # two unowned leads sit in the pool now
    assert row.turnover == 0.5  # 2 ÷ (2 + 2)
    assert row.avg_days_in_pool == 7.5  # c1 entered 02-20 03:00 (10 d), c2 02-25 03:00 (5 d)
    assert (
        row.claim_to_contact_hours == 34.5
    )  # c1: 03-02 03:00 → 03-03 01:00 = 22 h; c2: → 03-04 02:00 = 47 h
    assert (row.followups, row.reps, row.followups_per_rep) == (4, 1, 4.0)
    assert (row.won, row.closed, row.win_rate) == (1, 2, 0.5)  # o1 won, o2 lost (o3 not from the pool)
    weeks = {w["week"].isoformat(): (w["inflow"], w["outflow"]) for w in data["weeks"]}
    assert weeks == {"2026-03-02": (1, 2)}


def test_pool_kpis_for_the_admin_count_intake_and_conflicts(world, admin):
    data = services.pools(db.session, _filter(admin, pool=str(world["pool"].id)))
    (row,) = data["rows"]
    # inflow: u1, u2 and the WeChat customer created in the period + c3 recycled = 4; created = 3;
    # conflicts: 1 (on u1) → 1/3.
    assert (row.inflow, row.created, row.conflicts) == (4, 3, 1)
    assert row.conflict_rate == pytest.approx(1 / 3)


def test_channel_conversion(world, manager, admin):
    rows = {
        r["channel"]: (r["arrived"], r["won"]) for r in services.channels(db.session, _filter(admin))["rows"]
    }
    assert rows == {"展会": (2, 0), "公众号": (1, 1)}
    rows = {
        r["channel"]: (r["arrived"], r["won"])
        for r in services.channels(db.session, _filter(manager))["rows"]
    }
    assert rows == {"公众号": (1, 1)}  # the manager sees customers their team holds
    assert services.channels(db.session, _filter(admin, channel="展会"))["rows"][0]["arrived"] == 2


@pytest.mark.parametrize(
    "args, field",
    [
        ({"start": "2026-03-08", "end": "2026-03-02"}, "end"),
        ({"start": "2026-02-30", "end": "2026-03-02"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"preset": "decade"}, "preset"),
        ({"team": "999999"}, "team"),
        ({"pool": "abc"}, "pool"),
        ({"pool": "999999"}, "pool"),
        ({"start": "2024-01-01", "end": "2026-03-01"}, "end"),
    ],
)
def test_bad_filters_are_refused_with_a_chinese_message(world, manager, args, field):
    with pytest.raises(ReportInputError) as exc:
        parse_filter(db.session, args, manager, NOW)
    assert field in exc.value.errors
    assert any("\u4e00" <= ch <= "\u9fff" for ch in exc.value.errors[field])


def test_a_manager_cannot_pick_another_team(world, make, manager):
    other = make.team("二组")
    with pytest.raises(ReportInputError) as exc:
        parse_filter(db.session, {"team": str(other.id)}, manager, NOW)
    assert exc.value.errors["team"] == "未知的团队。"


def test_presets_use_the_local_calendar(world, manager):
    at = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)  # Thursday 03-05 01:00 in Shanghai
    week = parse_filter(db.session, {"preset": "week"}, manager, at)
    month = parse_filter(db.session, {"preset": "month"}, manager, at)
    last30 = parse_filter(db.session, {}, manager, at)
    assert (week.start.isoformat(), week.end.isoformat()) == ("2026-03-02", "2026-03-05")
    assert (month.start.isoformat(), month.end.isoformat()) == ("2026-03-01", "2026-03-05")
    assert (last30.start.isoformat(), last30.days) == ("2026-02-04", 30)


def _pool_numbers(user, **extra):
    data = services.pools(db.session, _filter(user, **extra))
    rows = [(r.name, r.inflow, r.outflow, r.created, r.avg_days_in_pool, r.claim_to_contact_hours, r.followups,
             r.reps) for r in data["rows"]]  # fmt: skip
    return rows, [(w["week"], w["inflow"], w["outflow"]) for w in data["weeks"]]


@pytest.mark.parametrize("who", ["manager", "admin"])
def test_rollup_equals_live_and_is_idempotent(world, request, who):
    from crm.models import ReportPoolDaily
    from crm.reports import rollup

    user = request.getfixturevalue(who)
    live = _pool_numbers(user)
    live_pool = _pool_numbers(user, pool=str(world["pool"].id))
    first = rollup.build(db.session, NOW)
    db.session.commit()
    count = db.session.query(ReportPoolDaily).count()
    assert first["rows"] == count > 0
    assert rollup.covered_until(db.session, "Asia/Shanghai").isoformat() == "2026-03-10"
    assert _pool_numbers(user) == live  # the whole period now comes from the rollup
    assert _pool_numbers(user, pool=str(world["pool"].id)) == live_pool
    rows_before = sorted(tuple(r) for r in db.session.execute(select(ReportPoolDaily.__table__)).all())
    rollup.build(db.session, NOW)  # again: the same rows
    rollup.build(db.session, NOW, rebuild=True)
    db.session.commit()
    rows_after = [tuple(r)[1:] for r in sorted(db.session.execute(select(ReportPoolDaily.__table__)).all())]
    assert sorted(r[1:] for r in rows_before) == sorted(rows_after)


def test_period_partly_after_the_rollup_mixes_rollup_and_live(world, manager):
    from crm.reports import rollup

    with clock.frozen(T("2026-03-05T04:00")):
        rollup.build(db.session, T("2026-03-05T04:00"))  # covers local days before 03-05
    db.session.commit()
    assert rollup.covered_until(db.session, "Asia/Shanghai").isoformat() == "2026-03-05"
    rows, weeks = _pool_numbers(manager)
    assert rows[0][1:3] == (1, 2) and rows[0][4:7] == (7.5, 34.5, 4)  # same as test_pool_kpis_for_the_manager
    assert weeks[0][1:] == (1, 2)


def test_rollup_cli(app, world):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "rollup", "--rebuild"])
    assert result.exit_code == 0, result.output
    assert "rollup: days" in result.output
