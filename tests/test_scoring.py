"""Scoring: explainable breakdowns that sum to the score, decay, grades, hot crossings, signals, nightly
recompute, win probability, the settings page and the hot-share report."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.followups.services import record_followup
from crm.models import BehaviorEvent, Customer, FollowUp, Opportunity, Reminder, ReminderKind, Stage
from crm.scoring import config, model
from crm.scoring import services as scoring
from crm.settings import store

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_win_model():
    """The learned model is cached per database URL; PostgreSQL tests share one URL."""
    from crm.scoring import bayes

    bayes.reset()


def _cfg(**changes) -> dict:
    cfg = {**config.DEFAULTS, **changes}
    return config.validate(cfg)


def test_breakdown_lines_sum_to_the_score_for_any_facts_and_settings():
    rng = random.Random(7)
    for _ in range(500):
        cfg = _cfg(
            caps={d: rng.randint(0, 60) for d in config.DIMENSIONS},
            followup_points=rng.randint(-10, 20),
            industry={"金融": rng.randint(-50, 50)},
            industry_other=rng.randint(-50, 50),
        )
        facts = model.Facts(
            company_size=rng.choice([None, 5, 60, 300, 5000]),
            industry=rng.choice([None, "金融", "餐饮"]),
            job_level=rng.choice([None, "决策层", "员工", "实习"]),
            region=rng.choice([None, "华东", "火星"]),
            channel=rng.choice([None, "展会", "其他"]),
            has_phone=rng.random() < 0.8,
            has_email=rng.random() < 0.5,
            events=[
                (rng.choice(config.EVENT_TYPES), NOW - timedelta(days=rng.uniform(0, 90)))
                for _ in range(rng.randint(0, 30))
            ],  # fmt: skip
            followups=rng.randint(0, 12),
            goals_met=rng.randint(0, 3),
            won_deals=rng.randint(0, 3),
        )
        doc = model.breakdown(cfg, facts, NOW)
        assert sum(line["p"] for line in doc["lines"]) == doc["total"]
        assert 0 <= doc["total"] <= 100


def test_each_factor_is_listed_with_its_points():
    facts = model.Facts(company_size=300, industry="金融", job_level="决策层", region="华东", channel="展会",
                        has_phone=True, followups=2, won_deals=1)  # fmt: skip
    doc = model.breakdown(config.DEFAULTS, facts, NOW)
    points = {(line["d"], line["f"]): line["p"] for line in doc["lines"]}
    assert points[("profile", "company_size")] == 9
    assert points[("profile", "industry")] == 10
    assert points[("profile", "job_level")] == 12
    assert points[("profile", "region")] == 6
    assert points[("profile", "channel")] == 7
    assert points[("profile", "contact")] == 3
    assert ("profile", "cap") not in points  # 47 points: under the profile cap of 50
    assert points[("interaction", "followups")] == 10
    assert points[("deals", "won")] == 15
    assert doc["total"] == 9 + 10 + 12 + 6 + 7 + 3 + 10 + 15
    labels = [line["label"] for line in model.explain(doc)]
    assert "行业: 金融" in labels and "公司规模 300 人" in labels


def test_a_dimension_over_its_cap_shows_the_cap_as_a_line():
    facts = model.Facts(events=[("form_submit", NOW)] * 5)
    doc = model.breakdown(config.DEFAULTS, facts, NOW)
    lines = {(line["d"], line["f"]): line["p"] for line in doc["lines"]}
    assert lines[("behaviour", "form_submit")] == 60
    assert lines[("behaviour", "cap")] == -30
    assert doc["total"] == 30


def test_behaviour_points_halve_every_half_life():
    assert model.decayed(8, 14, 0) == 8
    assert model.decayed(8, 14, 14 * 86400) == pytest.approx(4)
    assert model.decayed(8, 14, 28 * 86400) == pytest.approx(2)
    fresh = model.breakdown(config.DEFAULTS, model.Facts(events=[("download", NOW)]), NOW)["total"]
    old = model.breakdown(config.DEFAULTS, model.Facts(events=[("download", NOW - timedelta(days=14))]), NOW)[
        "total"
    ]
    assert (fresh, old) == (8, 4)


@pytest.mark.parametrize(
    ("score", "grade"), [(100, "A"), (80, "A"), (79, "B"), (50, "B"), (49, "C"), (0, "C")]
)
def test_grades_follow_the_bands(score, grade):
    assert model.grade_for(config.DEFAULTS, score) == grade


def test_grade_bands_are_configurable(session, admin):
    store.put(session, "scoring", {"grade_a": 70, "grade_b": 30}, admin, NOW)
    assert model.grade_for(config.get(session), 70) == "A"
    assert model.grade_for(config.get(session), 30) == "B"
    with pytest.raises(store.SettingsError) as bad:
        store.put(session, "scoring", {"grade_a": 40, "grade_b": 60}, admin, NOW)
    assert "grade_b" in bad.value.errors


@pytest.fixture
def pool(make, manager, rep):
    return make.pool(members=[rep], admins=[manager])


def _events(session, customer, kind: str, n: int, at: datetime) -> None:
    session.add_all(BehaviorEvent(customer_id=customer.id, type=kind, at=at, data={}) for _ in range(n))
    session.commit()


def test_stored_breakdown_sums_to_the_stored_score(session, make, pool):
    customer = make.customer(
        pool, industry="金融", job_level="总监", company_size=80, region="华南", channel="展会"
    )
    _events(session, customer, "download", 2, NOW - timedelta(days=3))
    scoring.recompute(session, [customer.id], NOW)
    session.commit()
    db.session.refresh(customer)
    assert sum(line["p"] for line in customer.score_breakdown["lines"]) == customer.score
    assert customer.grade == model.grade_for(config.DEFAULTS, customer.score)
    assert customer.scored_at == NOW


def test_crossing_the_hot_threshold_notifies_the_owner_once_per_crossing(session, make, pool, rep):
    customer = make.customer(pool, owner=rep, industry="金融", job_level="决策层", company_size=5000,
                             region="华东", channel="老客户转介绍", score=0, grade="C")  # fmt: skip
    _events(session, customer, "form_submit", 3, NOW)
    for day in range(3):
        session.add(FollowUp(customer_id=customer.id, user_id=rep.id, at=NOW - timedelta(days=day + 1), channel="phone",
                             content="聊了", next_plan="再聊", next_contact_at=NOW + timedelta(days=1), goal_met=True))  # fmt: skip
    session.commit()

    def hot_notes():
        return session.scalar(
            select(func.count())
            .select_from(Reminder)
            .where(Reminder.kind == ReminderKind.HOT, Reminder.user_id == rep.id)
        )

    scoring.recompute(session, [customer.id], NOW)
    session.commit()
    db.session.refresh(customer)
    assert customer.score >= 80 and customer.is_hot
    assert hot_notes() == 1
    scoring.recompute(session, [customer.id], NOW + timedelta(hours=1))  # still hot: no second notice
    session.commit()
    assert hot_notes() == 1
    later = NOW + timedelta(days=120)  # behaviour decayed, follow-ups out of the window: falls below
    scoring.recompute(session, [customer.id], later)
    session.commit()
    db.session.refresh(customer)
    assert customer.score < 80 and not customer.is_hot
    _events(session, customer, "form_submit", 3, later)
    for day in range(3):
        session.add(FollowUp(customer_id=customer.id, user_id=rep.id, at=later - timedelta(days=day + 1), channel="phone",
                             content="又聊了", next_plan="跟进", next_contact_at=later + timedelta(days=1), goal_met=True))  # fmt: skip
    session.commit()
    scoring.recompute(session, [customer.id], later)  # rises again: a new crossing, a new notice
    session.commit()
    assert hot_notes() == 2


def test_an_unowned_hot_customer_notifies_the_pool_admins(session, make, pool, manager):
    customer = make.customer(pool, industry="金融", job_level="决策层", company_size=5000, region="华东",
                             channel="老客户转介绍", score=0, grade="C")  # fmt: skip
    _events(session, customer, "form_submit", 3, NOW)
    _events(session, customer, "download", 3, NOW)
    session.add(Opportunity(customer_id=customer.id, name="年度合同", stage_id=session.scalar(select(Stage.id)),
                            status="won", amount=Decimal("1000"), stage_changed_at=NOW, created_at=NOW))  # fmt: skip
    session.commit()
    scoring.recompute(session, [customer.id], NOW)
    session.commit()
    note = session.scalar(select(Reminder).where(Reminder.kind == ReminderKind.HOT))
    assert note.user_id == manager.id and customer.name in note.title


def test_a_follow_up_rescores_the_customer(session, make, pool, rep):
    customer = make.customer(pool, owner=rep, score=0, grade="C", score_breakdown={})
    with clock.frozen(NOW):
        record_followup(session, customer, rep, channel="phone", content="电话沟通", goal_met=True,
                        next_plan="发报价", next_contact_at=NOW + timedelta(days=2), now=NOW)  # fmt: skip
        session.commit()
    db.session.refresh(customer)
    factors = {line["f"]: line["p"] for line in customer.score_breakdown["lines"]}
    assert factors["followups"] == 5 and factors["goals_met"] == 3


def test_nightly_recompute_decays_every_customer_in_batches(session, make, pool):
    customers = [make.customer(pool, score=0, grade="C") for _ in range(7)]
    for c in customers:
        _events(session, c, "download", 1, NOW)
    result = scoring.recompute_all(session, NOW, chunk_size=3)
    assert result["customers"] == 7
    assert {db.session.get(Customer, c.id).score for c in customers} == {8 + 3}  # download + phone
    result = scoring.recompute_all(session, NOW + timedelta(days=14), chunk_size=3)
    assert result["changed"] == 7
    assert {db.session.get(Customer, c.id).score for c in customers} == {4 + 3}
    assert scoring.recompute_all(session, NOW + timedelta(days=14), chunk_size=3)["changed"] == 0


def test_win_probability_is_learned_from_won_and_lost_history(session, make, pool):
    stage_id = session.scalar(select(Stage.id))
    for i in range(12):
        won = i < 6
        customer = make.customer(pool, industry="金融" if won else "餐饮", region="华东")
        session.add(Opportunity(customer_id=customer.id, name=f"单{i}", stage_id=stage_id, status="won" if won else "lost",
                                stage_changed_at=NOW, created_at=NOW))  # fmt: skip
    session.commit()
    finance = make.customer(pool, industry="金融")
    catering = make.customer(pool, industry="餐饮")
    scored = scoring.recompute(session, [finance.id, catering.id], NOW)
    assert scored[finance.id].win_probability > 0.8
    assert scored[catering.id].win_probability < 0.2


def test_no_win_probability_without_enough_history(session, make, pool):
    customer = make.customer(pool, industry="金融")
    assert scoring.recompute(session, [customer.id], NOW)[customer.id].win_probability is None


def test_settings_page_saves_points_and_rescores(admin_client, make, pool, session):
    customer = make.customer(pool, industry="金融")
    page = admin_client.get("/scoring/settings")
    assert page.status_code == 200 and "金融=10" in page.text
    form = {
        "cap_profile": 50, "cap_behaviour": 30, "cap_interaction": 25, "cap_deals": 20,
        "size_bands": "1000=12\n200=9", "industry": "金融=20\n教育=5", "industry_other": 1,
        "job_level": "决策层=12", "job_level_other": 0, "region": "华东=6", "region_other": 0,
        "channel": "展会=7", "channel_other": 0, "contact_phone": 3, "contact_email": 1, "contact_wechat": 2,
        "interaction_days": 30, "followup_points": 5, "goal_met_points": 3, "won_deal_points": 15,
        "grade_a": 80, "grade_b": 50, "hot_threshold": 80, "routing_threshold": 40, "win_probability": "y",
    } | {f"ev_{k}_weight": 2 for k in config.EVENT_TYPES} | {f"ev_{k}_half": 7 for k in config.EVENT_TYPES}  # fmt: skip
    saved = admin_client.post("/scoring/settings", data=form)
    assert saved.status_code == 303
    assert config.get(session)["industry"] == {"金融": 20, "教育": 5}
    db.session.refresh(customer)
    assert {line["f"]: line["p"] for line in customer.score_breakdown["lines"]}["industry"] == 20
    bad = admin_client.post("/scoring/settings", data=form | {"industry": "金融 twenty", "grade_b": 90})
    assert bad.status_code == 422
    assert "第 1 行应写成" in bad.text


def test_settings_api_refuses_bad_points(app, make, admin, api):
    token = make.token(admin, "read write admin")
    resp = api(token).put("/api/v1/settings/scoring", json={"hot_threshold": 0})
    assert resp.status_code == 422 and "hot_threshold" in resp.json["fields"]


def test_report_compares_hot_follow_up_share_with_hot_holding_share(manager_client, make, pool, rep, manager):
    hot = make.customer(pool, owner=rep, score=90, grade="A")
    cold = [make.customer(pool, owner=rep, score=20, grade="C") for _ in range(3)]
    for i, (customer, score) in enumerate([(hot, 90), (hot, 90), (cold[0], 20), (cold[1], 20)]):
        db.session.add(FollowUp(customer_id=customer.id, user_id=rep.id, at=clock.now() - timedelta(days=i + 1),
                                channel="phone", content="x", next_plan="y", score_at=score,
                                next_contact_at=clock.now() + timedelta(days=1)))  # fmt: skip
    db.session.commit()
    from crm.scoring.report import hot_share

    rows, total, _hot = hot_share(db.session, manager, clock.now())
    row = next(r for r in rows if r.user_id == rep.id)
    assert (row.followups, row.hot_followups, row.held, row.hot_held) == (4, 2, 4, 1)
    assert row.followup_share == 0.5 and row.holding_share == 0.25 and row.focus == 2.0
    page = manager_client.get("/scoring/report")
    assert page.status_code == 200 and rep.name in page.text and "2.00" in page.text


def test_reps_cannot_open_the_report(rep_client):
    assert rep_client.get("/scoring/report").status_code == 403


def test_score_panel_and_api_json_explain_the_score(app, make, pool, rep, session):
    from crm.hooks import CUSTOMER_JSON, CUSTOMER_PANELS, render_panels

    customer = make.customer(pool, owner=rep, industry="金融", company_size=300)
    scoring.recompute(session, [customer.id], NOW)
    session.commit()
    db.session.refresh(customer)
    shown = dict((p.name, ctx) for p, ctx in render_panels(CUSTOMER_PANELS, session, customer, rep))
    assert sum(line["points"] for line in shown["score"]["lines"]) == customer.score
    with app.test_request_context():
        from flask import render_template

        html = render_template("scoring/_panel.html", **shown["score"])
    assert "行业: 金融" in html and "+10" in html
    data = {}
    for fn in CUSTOMER_JSON:
        data |= fn(session, customer, rep)
    assert sum(item["points"] for item in data["score_breakdown"]) == data["score"] == customer.score
