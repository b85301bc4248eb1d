"""The calendar feed (secret, rotatable, revocable URL) and spot checks (抽查)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from icalendar import Calendar
from sqlalchemy import func, select

from crm import clock, signals
from crm.extensions import db
from crm.followups import spotcheck
from crm.followups.services import record_followup
from crm.models import FollowUp, Reminder, Role, SpotCheck

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


def _feed_url(resp) -> str:
    return re.search(r"(/calendar/[\w-]+\.ics)", resp.get_data(as_text=True)).group(1)


def test_calendar_feed_lists_upcoming_reminders_and_can_be_rotated_and_revoked(rep_client, client, make, rep):
    with clock.frozen(NOW):
        make.reminder(rep, title="给王总发报价", due_at=NOW + timedelta(days=2))
        make.reminder(rep, title="太久以前", due_at=NOW - timedelta(days=30))
        make.reminder(rep, title="已完成", due_at=NOW + timedelta(days=1), status="done")
        other = make.user(Role.REP)
        make.reminder(other, title="别人的", due_at=NOW + timedelta(days=1))
        resp = rep_client.post("/profile/calendar", headers={"HX-Request": "true"})
        url = _feed_url(resp)
        db.session.refresh(rep)
        assert (
            rep.ics_token_hash and url.split("/")[-1][:-4] not in rep.ics_token_hash
        )  # only the hash is kept
        feed = client.get(url)
        assert feed.status_code == 200 and feed.mimetype == "text/calendar"
        cal = Calendar.from_ical(feed.data)
        events = [e for e in cal.walk("VEVENT")]
        assert [str(e["SUMMARY"]) for e in events] == ["给王总发报价"]
        assert events[0].decoded("DTSTART") == NOW + timedelta(days=2)
        assert any(c.name == "VALARM" for c in events[0].subcomponents)
        # Rotating ends the old URL; revoking ends every URL.
        new_url = _feed_url(rep_client.post("/profile/calendar", headers={"HX-Request": "true"}))
        assert client.get(url).status_code == 404
        assert client.get(new_url).status_code == 200
        rep_client.post("/profile/calendar/revoke", headers={"HX-Request": "true"})
        assert client.get(new_url).status_code == 404


@pytest.fixture
def team_world(make, rep, manager):
    pool = make.pool(members=[rep])
    customers = [make.customer(pool, owner=rep, claimed_at=NOW - timedelta(days=10)) for _ in range(8)]
    return customers


def _followups_yesterday(customers, rep, n=8):
    made = []
    for i, customer in enumerate(customers[:n]):
        at = NOW - timedelta(hours=20, minutes=i)  # 2026-03-09 local
        with clock.frozen(at):
            made.append(record_followup(db.session, customer, rep, channel="phone", content=f"第{i}次", goal_met=False,
                                        next_plan="再联系", next_contact_at=at + timedelta(days=3), now=at))  # fmt: skip
    db.session.commit()
    return made


def test_daily_sample_is_random_idempotent_and_notifies_the_manager(team_world, rep, manager):
    _followups_yesterday(team_world, rep)
    added = spotcheck.sample_daily(db.session, NOW)
    db.session.commit()
    assert added == 5  # default sample size
    checks = db.session.scalars(select(SpotCheck)).all()
    assert {c.manager_id for c in checks} == {manager.id}
    assert {c.sampled_on for c in checks} == {date(2026, 3, 9)}
    assert spotcheck.sample_daily(db.session, NOW) == 0  # same day again: nothing more
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(SpotCheck)) == 5
    [notice] = db.session.scalars(select(Reminder).where(Reminder.kind == "spot_check")).all()
    assert notice.user_id == manager.id and "5 条" in notice.title


def test_marking_fake_recomputes_the_touch_clocks_and_signals(manager_client, team_world, rep, manager):
    fus = _followups_yesterday(team_world, rep, n=1)
    customer = team_world[0]
    # A genuine older follow-up exists from a week ago (this holding).
    early = NOW - timedelta(days=7)
    db.session.add(FollowUp(customer_id=customer.id, user_id=rep.id, at=early, channel="visit", content="拜访",
                            goal_met=True, next_plan="报价", next_contact_at=early + timedelta(days=3),
                            holding_no=customer.holding_no))  # fmt: skip
    db.session.commit()
    check = SpotCheck(
        followup_id=fus[0].id, manager_id=manager.id, sampled_on=date(2026, 3, 9), verdict="pending"
    )
    db.session.add(check)
    db.session.commit()
    seen = []

    def receiver(sender, **kw):
        seen.append(sender.id)

    signals.followup_invalidated.connect(receiver)
    try:
        with clock.frozen(NOW):
            resp = manager_client.post(f"/spot-checks/{check.id}", data={"verdict": "fake", "note": "客户说没接到电话"},
                                       headers={"HX-Request": "true"})  # fmt: skip
    finally:
        signals.followup_invalidated.disconnect(receiver)
    assert resp.status_code == 200 and "虚假" in resp.get_data(as_text=True)
    assert seen == [fus[0].id]
    db.session.refresh(customer)
    assert customer.last_followup_at == early  # the fake one no longer counts
    assert customer.holding_followups == 1
    assert customer.first_contact_at == early
    # Changing the verdict back restores it.
    with clock.frozen(NOW):
        manager_client.post(f"/spot-checks/{check.id}", data={"verdict": "genuine"})
    db.session.refresh(customer)
    assert customer.last_followup_at == fus[0].at and customer.holding_followups == 2


def test_only_the_sampled_manager_may_mark(app, make, team_world, rep, manager):
    from tests.conftest import login

    fus = _followups_yesterday(team_world, rep, n=1)
    check = SpotCheck(
        followup_id=fus[0].id, manager_id=manager.id, sampled_on=date(2026, 3, 9), verdict="pending"
    )
    db.session.add(check)
    db.session.commit()
    other_manager = make.user(Role.MANAGER)
    client = app.test_client()
    login(client, other_manager)
    assert client.post(f"/spot-checks/{check.id}", data={"verdict": "fake"}).status_code == 404
    login(client, rep)
    assert client.post(f"/spot-checks/{check.id}", data={"verdict": "fake"}).status_code == 403
    db.session.refresh(check)
    assert check.verdict == "pending" and not check.followup.is_fake


def test_spot_check_page_lists_pending(manager_client, team_world, rep, manager):
    fus = _followups_yesterday(team_world, rep, n=2)
    spotcheck.sample_daily(db.session, NOW)
    db.session.commit()
    html = manager_client.get("/spot-checks").get_data(as_text=True)
    assert all(fu.content in html for fu in fus)
    assert "真实" in html and "虚假" in html
