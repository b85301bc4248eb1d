"""API gaps: spot checks (the latest sample, mark genuine/fake) and in-app notifications (list, mark read)."""

from __future__ import annotations

from datetime import date

from crm import clock
from crm.extensions import db
from crm.models import FollowUp, ReminderDelivery, Role, SpotCheck


def _check(make, rep, manager, day: date) -> SpotCheck:
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    fu = make.followup(customer, rep)
    check = SpotCheck(followup_id=fu.id, manager_id=manager.id, sampled_on=day, verdict="pending")
    db.session.add(check)
    db.session.commit()
    return check


def test_a_manager_lists_the_latest_sample_and_marks_a_follow_up_fake(make, rep, manager, api):
    old = _check(make, rep, manager, date(2026, 3, 1))
    new = _check(make, rep, manager, date(2026, 3, 2))
    client = api(make.token(manager))
    listed = client.get("/api/v1/spot-checks").json["spot_checks"]
    assert [c["id"] for c in listed] == [new.id]
    assert {c["id"] for c in client.get("/api/v1/spot-checks?all=true").json["spot_checks"]} == {
        old.id,
        new.id,
    }
    resp = client.post(f"/api/v1/spot-checks/{new.id}", json={"verdict": "fake", "note": "录音对不上"})
    assert resp.status_code == 200 and resp.json["verdict"] == "fake"
    assert db.session.get(FollowUp, new.followup_id).is_fake is True
    assert client.post(f"/api/v1/spot-checks/{new.id}", json={"verdict": "maybe"}).status_code == 422
    assert client.get("/api/v1/spot-checks?pending=true&all=true").json["spot_checks"][0]["id"] == old.id


def test_reps_and_other_managers_cannot_mark(make, rep, manager, api):
    check = _check(make, rep, manager, date(2026, 3, 2))
    assert api(make.token(rep)).get("/api/v1/spot-checks").status_code == 403
    stranger = make.user(Role.MANAGER)
    resp = api(make.token(stranger)).post(f"/api/v1/spot-checks/{check.id}", json={"verdict": "genuine"})
    assert resp.status_code == 404


def _delivery(make, user, title):
    reminder = make.reminder(user, title=title)
    delivery = ReminderDelivery(reminder_id=reminder.id, user_id=user.id, channel="in_app", round=0, status="sent",
                                attempts=0, next_attempt_at=reminder.due_at, created_at=clock.now())  # fmt: skip
    db.session.add(delivery)
    db.session.commit()
    return delivery


def test_in_app_notifications_are_listed_and_marked_read(make, rep, manager, api):
    first, second = _delivery(make, rep, "第一条"), _delivery(make, rep, "第二条")
    _delivery(make, manager, "别人的")
    client = api(make.token(rep))
    body = client.get("/api/v1/notifications").json
    assert {n["title"] for n in body["notifications"]} == {"第一条", "第二条"} and body["unread"] == 2
    resp = client.post("/api/v1/notifications/read", json={"ids": [first.id]})
    assert resp.json == {"marked": 1, "unread": 1}
    assert client.post("/api/v1/notifications/read", json={"ids": "all"}).status_code == 422
    assert client.post("/api/v1/notifications/read").json == {"marked": 1, "unread": 0}
    db.session.expire_all()
    assert db.session.get(ReminderDelivery, second.id).read_at is not None
    assert api(make.token(manager)).get("/api/v1/notifications").json["unread"] == 1
