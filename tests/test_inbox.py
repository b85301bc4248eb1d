"""The inbox (工作台): sections at the edges of the local day, snooze and done, the manager's team list,
home panels, the polling fragment and ``GET /api/v1/inbox``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm import clock, hooks
from crm.extensions import db
from crm.inbox.services import inbox_for
from crm.models import Reminder, ReminderDelivery
from crm.reminders.dispatch import fan_out

SH = clock.zone("Asia/Shanghai")


def sh(*args) -> datetime:
    """A wall-clock time in Asia/Shanghai, as an aware datetime."""
    return datetime(*args, tzinfo=SH).astimezone(UTC)


@pytest.fixture
def owned(make, rep):
    pool = make.pool(members=[rep])
    with clock.frozen(sh(2026, 3, 1, 9, 0)):
        return make.customer(pool, owner=rep, name="苏州博远电子有限公司")


def _sections(user, at) -> dict[str, list[int]]:
    db.session.expire_all()
    box = inbox_for(db.session, user, at)
    return {key: [i.id for i in s.items] for key, s in box.sections.items()}


def test_a_reminder_due_at_2359_is_today_until_midnight_then_overdue(make, rep, owned):
    r = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 23, 59))
    assert r.id in _sections(rep, sh(2026, 3, 10, 0, 0))["today"]
    assert r.id in _sections(rep, sh(2026, 3, 10, 23, 59, 30))["today"]
    late = _sections(rep, sh(2026, 3, 11, 0, 0))
    assert r.id in late["overdue"] and r.id not in late["today"]


def test_a_reminder_due_at_midnight_shows_from_that_day_only(make, rep, owned):
    r = make.reminder(rep, customer=owned, kind="cadence", due_at=sh(2026, 3, 11, 0, 0))
    before = _sections(rep, sh(2026, 3, 10, 23, 59, 59))
    assert all(r.id not in ids for ids in before.values())
    assert r.id in _sections(rep, sh(2026, 3, 11, 0, 0))["today"]


def test_the_day_is_the_teams_time_zone(make, rep, owned):
    team = make.team("伦敦组", timezone="Europe/London")
    rep.team = team
    db.session.commit()
    # 2026-03-11 07:30 Shanghai is 2026-03-10 23:30 in London: still "today" there.
    r = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 11, 7, 30))
    assert r.id in _sections(rep, sh(2026, 3, 11, 7, 45))["today"]
    assert r.id in _sections(rep, sh(2026, 3, 11, 8, 0))["overdue"]  # 00:00 in London


def test_new_customer_shows_from_claim_until_its_deadline(make, rep, owned):
    r = make.reminder(rep, customer=owned, kind="new_customer", notify_at=sh(2026, 3, 10, 9, 0),
                      due_at=sh(2026, 3, 13, 9, 0))  # fmt: skip
    assert all(r.id not in ids for ids in _sections(rep, sh(2026, 3, 9, 20, 0)).values())
    for day in (10, 11, 12, 13):
        assert r.id in _sections(rep, sh(2026, 3, day, 20, 0))["today"], day
    assert r.id in _sections(rep, sh(2026, 3, 14, 0, 0))["overdue"]


def test_sections_stalled_and_recycle(make, rep, owned):
    stalled = make.reminder(rep, customer=owned, kind="stalled", due_at=sh(2026, 3, 9, 9, 0))
    warning = make.reminder(rep, customer=owned, kind="recycle_warning", due_at=sh(2026, 3, 12, 9, 0))
    notice = make.reminder(rep, customer=owned, kind="duplicate", due_at=sh(2026, 3, 9, 9, 0))
    sections = _sections(rep, sh(2026, 3, 10, 12, 0))
    assert sections["stalled"] == [stalled.id]
    assert sections["recycle"] == [warning.id]  # shown as soon as it exists
    assert all(notice.id not in ids for ids in sections.values())  # notices live in 通知, not the inbox


def test_counts_and_done_and_snooze_update_the_fragment(rep_client, make, rep, owned):
    now = sh(2026, 3, 10, 10, 0)
    due = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    second = make.customer(owned.pool, owner=rep, name="杭州星河科技有限公司")
    other = make.reminder(rep, customer=second, kind="custom", due_at=sh(2026, 3, 10, 16, 0), title="发报价")
    late = make.reminder(rep, customer=owned, kind="cadence", due_at=sh(2026, 3, 8, 10, 0))
    with clock.frozen(now):
        html = rep_client.get("/inbox/sections", headers={"HX-Request": "true"}).get_data(as_text=True)
        assert 'data-poll="30" data-poll-on-show hx-trigger="crm:poll' in html
        assert 'data-count="today"><span class="value">2</span>' in html
        assert 'data-count="overdue"><span class="value">1</span>' in html
        resp = rep_client.post(
            f"/reminders/{due.id}/done", data={"target": "inbox"}, headers={"HX-Request": "true"}
        )
        assert resp.status_code == 200
        assert 'data-count="today"><span class="value">1</span>' in resp.get_data(as_text=True)
        assert "crm:badge-refresh" in resp.headers["HX-Trigger"]
        resp = rep_client.post(f"/reminders/{late.id}/snooze", data={"target": "inbox", "preset": "0"},
                               headers={"HX-Request": "true"})  # fmt: skip
        assert resp.status_code == 200
        assert 'data-count="overdue"><span class="value">0</span>' in resp.get_data(as_text=True)
    db.session.refresh(late)
    assert late.due_at == sh(2026, 3, 11, 10, 0)  # 明天 10:00
    assert late.original_due_at == sh(2026, 3, 8, 10, 0)
    assert late.id in _sections(rep, sh(2026, 3, 11, 9, 0))["today"]
    assert other.id in _sections(rep, now)["today"]


def test_snooze_to_a_chosen_time_and_bad_times(rep_client, make, rep, owned):
    r = make.reminder(rep, customer=owned, due_at=sh(2026, 3, 10, 9, 0))
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        bad = rep_client.post(f"/reminders/{r.id}/snooze", data={"until": "2026-03-01T10:00"},
                              headers={"HX-Request": "true"})  # fmt: skip
        assert bad.status_code == 422 and "晚于现在" in bad.get_data(as_text=True)
        ok = rep_client.post(f"/reminders/{r.id}/snooze", data={"until": "2026-03-12T14:30"})
        assert ok.status_code == 302
    db.session.refresh(r)
    assert r.due_at == sh(2026, 3, 12, 14, 30) and r.status == "open"


def test_snoozing_a_sent_reminder_notifies_again_in_a_new_round(rep_client, make, rep, owned):
    r = make.reminder(rep, customer=owned, due_at=sh(2026, 3, 10, 9, 0))
    with clock.frozen(sh(2026, 3, 10, 9, 1)):
        fan_out(db.session, clock.now())
        db.session.commit()
        rep_client.post(f"/reminders/{r.id}/snooze", data={"preset": "1h"})
    db.session.refresh(r)
    assert r.round == 1 and r.fanned_out_at is None
    with clock.frozen(sh(2026, 3, 10, 10, 5)):
        fan_out(db.session, clock.now())
        db.session.commit()
    rows = db.session.scalars(select(ReminderDelivery).where(ReminderDelivery.reminder_id == r.id)).all()
    assert sorted((d.channel, d.round) for d in rows) == [("in_app", 0), ("in_app", 1)]


def test_others_cannot_touch_my_reminders(app, make, rep, owned):
    from crm.models import Role
    from tests.conftest import login

    r = make.reminder(rep, customer=owned)
    stranger = make.user(Role.REP)
    client = app.test_client()
    login(client, stranger)
    assert client.post(f"/reminders/{r.id}/done").status_code == 404
    assert client.post(f"/reminders/{r.id}/snooze", data={"preset": "1h"}).status_code == 404
    db.session.refresh(r)
    assert r.status == "open"


def test_manager_sees_the_teams_overdue_and_home_panels(
    app, manager_client, rep_client, make, rep, manager, owned
):
    from jinja2 import ChoiceLoader, DictLoader

    app.jinja_env.loader = ChoiceLoader(
        [DictLoader({"inbox/_test_panel.html": '<section id="test-panel">测试面板 {{ ctx.n }}</section>'}),
         app.jinja_env.loader]
    )  # fmt: skip
    late = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 8, 10, 0))
    hooks.register_home_panel(90, "test-panel", "inbox/_test_panel.html", lambda s, subject, u: {"n": 7},
                              min_role="manager")  # fmt: skip
    try:
        with clock.frozen(sh(2026, 3, 10, 10, 0)):
            html = manager_client.get("/").get_data(as_text=True)
            assert "团队逾期未跟进" in html and rep.name in html and owned.name in html
            assert "测试面板 7" in html
            assert "测试面板" not in rep_client.get("/").get_data(as_text=True)
            team = manager_client.get("/inbox/team").get_data(as_text=True)
            assert owned.name in team
            # The manager can clear the rep's overdue item.
            assert manager_client.post(f"/reminders/{late.id}/done").status_code == 302
    finally:
        hooks.HOME_PANELS[:] = [p for p in hooks.HOME_PANELS if p.name != "test-panel"]
    db.session.refresh(late)
    assert late.status == "done"


def test_api_inbox(api, make, rep, owned):
    make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    second = make.customer(owned.pool, owner=rep, name="杭州星河科技有限公司")
    make.reminder(rep, customer=second, kind="next_contact", due_at=sh(2026, 3, 9, 15, 0))
    token = make.token(rep)
    with clock.frozen(sh(2026, 3, 10, 23, 59)):
        body = api(token).get("/api/v1/inbox").json
    assert body["counts"] == {"today": 1, "overdue": 1, "stalled": 0, "recycle": 0}
    assert body["day"]["start"] == "2026-03-09T16:00:00+00:00"
    item = body["sections"]["today"]["items"][0]
    assert item["customer"]["name"] == owned.name and item["due_at"] == "2026-03-10T07:00:00+00:00"
    with clock.frozen(sh(2026, 3, 11, 0, 0)):
        assert api(token).get("/api/v1/inbox").json["counts"]["overdue"] == 2


def test_api_reminders_list_and_custom(api, make, rep, owned):
    token = make.token(rep)
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        resp = api(token).post("/api/v1/reminders", json={"title": "下周三发报价", "due_at": "2026-03-18T10:00:00+08:00",
                                                          "customer_id": owned.id})  # fmt: skip
        assert resp.status_code == 201 and resp.json["kind"] == "custom"
        listed = api(token).get("/api/v1/reminders").json["reminders"]
        assert [r["title"] for r in listed] == ["下周三发报价"]
        assert api(token).get("/api/v1/reminders?status=nope").status_code == 422
        bad = api(token).post("/api/v1/reminders", json={"title": "", "due_at": "2026-03-01T10:00:00+08:00"})
        assert bad.status_code == 422
        rid = listed[0]["id"]
        assert api(token).post(f"/api/v1/reminders/{rid}/done").status_code == 200
        assert api(token).post(f"/api/v1/reminders/{rid}/done").status_code == 409
    assert db.session.scalar(select(Reminder).where(Reminder.id == rid)).status == "done"


def test_polling_an_unchanged_inbox_answers_204(rep_client, make, rep, owned):
    make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        html = rep_client.get("/inbox/sections", headers={"HX-Request": "true"}).get_data(as_text=True)
        version = html.split('"v": "', 1)[1].split('"', 1)[0]
        same = rep_client.get(f"/inbox/sections?v={version}", headers={"HX-Request": "true"})
        assert same.status_code == 204 and same.data == b""
        second = make.customer(owned.pool, owner=rep, name="杭州星河科技有限公司")
        make.reminder(rep, customer=second, kind="custom", due_at=sh(2026, 3, 10, 16, 0))
        changed = rep_client.get(f"/inbox/sections?v={version}", headers={"HX-Request": "true"})
        assert (
            changed.status_code == 200
            and 'data-count="today"><span class="value">2</span>' in changed.get_data(as_text=True)
        )
    # An hour later the relative texts move on: the fragment is sent again.
    with clock.frozen(sh(2026, 3, 10, 11, 0)):
        assert (
            rep_client.get(f"/inbox/sections?v={version}", headers={"HX-Request": "true"}).status_code == 200
        )


def test_cli_generate_and_spot_checks(app, make, rep):
    pool = make.pool(members=[rep])
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        make.customer(pool, owner=rep, claimed_at=sh(2026, 3, 10, 8, 0))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "generate-reminders", "--as-of", "2026-03-10T10:00:00+08:00"])
    assert result.exit_code == 0 and "new_customer   1" in result.output
    again = runner.invoke(args=["crm", "generate-reminders", "--as-of", "2026-03-10T10:00:00+08:00"])
    assert "new_customer   0" in again.output
    sampled = runner.invoke(args=["crm", "spot-checks", "--as-of", "2026-03-10T10:00:00+08:00"])
    assert sampled.exit_code == 0 and "sampled 0 follow-ups" in sampled.output


def test_a_customer_shows_once_per_section(make, rep, owned):
    first = make.reminder(rep, customer=owned, kind="cadence", due_at=sh(2026, 3, 7, 10, 0))
    again = make.reminder(rep, customer=owned, kind="custom", due_at=sh(2026, 3, 8, 10, 0))
    today = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    db.session.expire_all()
    box = inbox_for(db.session, rep, sh(2026, 3, 10, 10, 0))
    assert [i.id for i in box.sections["overdue"].items] == [first.id] and box.sections["overdue"].count == 1
    assert [i.id for i in box.sections["today"].items] == [today.id]
    assert again.id not in [i.id for s in box.sections.values() for i in s.items]


def test_done_offers_undo_and_undo_reopens_within_a_minute(rep_client, make, rep, owned):
    r = make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    hx = {"HX-Request": "true"}
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        done = rep_client.post(f"/reminders/{r.id}/done", data={"target": "inbox"}, headers=hx)
        toast = json.loads(done.headers["HX-Trigger"])["crm:toast"]
        assert toast["undo"]["url"] == f"/reminders/{r.id}/reopen" and toast["undo"]["label"] == "撤销"
        undone = rep_client.post(toast["undo"]["url"], headers=hx)
        assert undone.status_code == 200 and "crm:inbox-changed" in undone.headers["HX-Trigger"]
    db.session.refresh(r)
    assert r.status == "open" and r.done_at is None
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        rep_client.post(f"/reminders/{r.id}/done", data={"target": "inbox"}, headers=hx)
    with clock.frozen(sh(2026, 3, 10, 10, 5)):
        assert rep_client.post(f"/reminders/{r.id}/reopen", headers=hx).status_code == 409
    db.session.refresh(r)
    assert r.status == "done"


def test_planned_contact_done_asks_about_a_follow_up_and_recycle_warning_offers_extension(
    rep_client, make, rep, owned
):
    make.reminder(rep, customer=owned, kind="next_contact", due_at=sh(2026, 3, 10, 15, 0))
    make.reminder(rep, customer=owned, kind="recycle_warning", due_at=sh(2026, 3, 12, 9, 0))
    with clock.frozen(sh(2026, 3, 10, 10, 0)):
        html = rep_client.get("/").get_data(as_text=True)
    assert "完成前记录一条跟进?" in html and "不记录,直接完成" in html
    assert f'href="/customers/{owned.id}#extension-action"' in html and "申请延期" in html


def test_newly_claimed_customers_awaiting_first_contact_show_with_the_time_left(rep_client, make, rep):
    from crm.models import RuleKind
    from tests.recycle_support import add_rule

    pool = make.pool(members=[rep])
    add_rule(pool, RuleKind.NO_FIRST_CONTACT, hours=24)
    now = sh(2026, 3, 10, 10, 0)
    waiting = make.customer(pool, owner=rep, name="新领的客户甲", claimed_at=now - timedelta(hours=4))
    make.customer(
        pool, owner=rep, name="已联系的客户乙", claimed_at=now - timedelta(hours=4), first_contact_at=now
    )
    make.customer(pool, owner=rep, name="很久以前的客户丙", claimed_at=now - timedelta(days=30))
    with clock.frozen(now):
        html = rep_client.get("/").get_data(as_text=True)
        panel = rep_client.get("/recycle/first-contact", headers={"HX-Request": "true"}).get_data(
            as_text=True
        )
    assert "新领取待首联" in html and "新领的客户甲" in html and "剩 20 小时" in html
    assert "已联系的客户乙" not in html and "很久以前的客户丙" not in html
    assert f"/customers/{waiting.id}" in panel
