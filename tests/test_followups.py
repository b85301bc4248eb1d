"""Follow-up records: validation (form, service, API), their effects on the customer and the reminders,
the contact-frequency cap, and the customer-page panel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.followups import services
from crm.followups.routes import panel_context
from crm.hooks import CUSTOMER_PANELS
from crm.models import FollowUp, Reminder, Role
from crm.settings import store

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


@pytest.fixture
def owned(make, rep):
    pool = make.pool(members=[rep])
    return make.customer(pool, owner=rep, claimed_at=NOW - timedelta(days=2))


def _form(**over):
    data = {
        "channel": "phone",
        "content": "电话沟通,客户要报价",
        "goal_met": "y",
        "next_plan": "发报价单",
        "next_contact_at": "2026-03-13T10:00",
    }
    data.update(over)
    return data


def _reminders(customer, **where):
    query = select(Reminder).where(Reminder.customer_id == customer.id)
    for key, value in where.items():
        query = query.where(getattr(Reminder, key) == value)
    return db.session.scalars(query.order_by(Reminder.id)).all()


def test_saving_a_followup_resets_the_clocks_and_creates_the_next_reminder(rep_client, owned):
    with clock.frozen(NOW):
        resp = rep_client.post(f"/customers/{owned.id}/followup", data=_form())
    assert resp.status_code == 303
    fu = db.session.scalar(select(FollowUp).where(FollowUp.customer_id == owned.id))
    assert fu.channel == "phone" and fu.goal_met is True and fu.next_plan == "发报价单"
    db.session.refresh(owned)
    assert owned.last_followup_at == NOW
    assert owned.first_contact_at == NOW
    assert owned.holding_followups == 1
    [nxt] = _reminders(owned, kind="next_contact")
    assert nxt.status == "open" and nxt.user_id == owned.owner_id
    # 2026-03-13 10:00 Shanghai = 02:00 UTC
    assert nxt.due_at == datetime(2026, 3, 13, 2, 0, tzinfo=UTC)
    assert "发报价单" in nxt.title


def test_saving_closes_the_answered_reminder_and_the_older_plans(rep_client, make, rep, owned):
    custom = make.reminder(rep, customer=owned, due_at=NOW - timedelta(hours=1))
    old_plan = make.reminder(rep, customer=owned, kind="next_contact", due_at=NOW + timedelta(days=1))
    other = make.reminder(rep, customer=owned, kind="custom", due_at=NOW + timedelta(days=1))
    with clock.frozen(NOW):
        resp = rep_client.post(f"/customers/{owned.id}/followup", data=_form(reminder_id=str(custom.id)))
    assert resp.status_code == 303
    for r in (custom, old_plan, other):
        db.session.refresh(r)
    assert custom.status == "done"  # answered
    assert old_plan.status == "done"  # superseded by the new next-contact plan
    assert other.status == "open"  # a different custom task stays
    fu = db.session.scalar(select(FollowUp).where(FollowUp.customer_id == owned.id))
    assert fu.answered_reminder_id == custom.id


def test_sheet_save_tells_the_inbox_to_refresh(rep_client, owned):
    with clock.frozen(NOW):
        resp = rep_client.post(
            f"/customers/{owned.id}/followup", data=_form(mode="sheet"), headers={"HX-Request": "true"}
        )
    assert resp.status_code == 200
    assert resp.data == b""  # the sheet closes
    assert "crm:followup-saved" in resp.headers["HX-Trigger"]


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"next_contact_at": ""}, "next_contact_at", "请选择下次联系时间"),
        ({"next_contact_at": "2026-03-09T10:00"}, "next_contact_at", "时间必须晚于现在"),
        ({"next_contact_at": "2027-06-01T10:00"}, "next_contact_at", "不能超过一年"),
        ({"next_contact_at": "下周三"}, "next_contact_at", "时间格式不正确"),
        ({"channel": "telepathy"}, "channel", "未知的跟进方式"),
        ({"content": "x" * 2001}, "content", "不能超过 2000 字"),
        ({"content": "   "}, "content", "请填写跟进内容"),
        ({"next_plan": ""}, "next_plan", "请填写下次计划"),
        ({"next_plan": "y" * 501}, "next_plan", "不能超过 500 字"),
    ],
)
def test_bad_input_is_refused_in_place_and_nothing_is_saved(rep_client, owned, override, field, message):
    with clock.frozen(NOW):
        resp = rep_client.post(
            f"/customers/{owned.id}/followup", data=_form(**override), headers={"HX-Request": "true"}
        )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert message in html
    assert f'id="field-{field}"' in html
    # What the rep typed is still there.
    if field != "content":
        assert "电话沟通,客户要报价" in html
    assert db.session.scalar(select(FollowUp).where(FollowUp.customer_id == owned.id)) is None
    assert _reminders(owned) == []


def test_service_refuses_past_or_missing_next_contact(session, owned, rep):
    for value, text in ((None, "请选择下次联系时间"), (NOW - timedelta(minutes=1), "必须晚于现在")):
        with pytest.raises(services.FollowUpError, match=text):
            services.record_followup(
                session, owned, rep, channel="phone", content="c", goal_met=False, next_plan="p",
                next_contact_at=value, now=NOW,
            )  # fmt: skip
    session.rollback()
    assert session.scalar(select(FollowUp)) is None


def test_a_rep_cannot_record_followups_on_someone_elses_customer(app, make, owned):
    other = make.user(Role.REP)
    from tests.conftest import login

    client = app.test_client()
    login(client, other)
    with clock.frozen(NOW):
        assert client.get(f"/customers/{owned.id}/followup").status_code == 404
        assert client.post(f"/customers/{owned.id}/followup", data=_form()).status_code == 404
    with pytest.raises(services.FollowUpForbidden):
        services.record_followup(
            db.session, owned, other, channel="phone", content="c", goal_met=False, next_plan="p",
            next_contact_at=NOW + timedelta(days=1), now=NOW,
        )  # fmt: skip


def test_manager_followup_on_a_reps_customer_reminds_the_owner(manager_client, manager, owned, rep):
    with clock.frozen(NOW):
        assert manager_client.post(f"/customers/{owned.id}/followup", data=_form()).status_code == 303
    [nxt] = _reminders(owned, kind="next_contact")
    assert nxt.user_id == rep.id
    fu = db.session.scalar(select(FollowUp).where(FollowUp.customer_id == owned.id))
    assert fu.user_id == manager.id


def _save(session, customer, user, at, confirm=None):
    with clock.frozen(at):
        fu = services.record_followup(
            session, customer, user, channel="wechat", content="发了案例", goal_met=False, next_plan="再联系",
            next_contact_at=at + timedelta(days=1), now=at, confirm_over_cap=confirm,
        )  # fmt: skip
    session.commit()
    return fu


def test_frequency_cap_warns_then_saves_after_confirmation(rep_client, session, owned, rep):
    _save(session, owned, rep, NOW - timedelta(hours=1))
    _save(session, owned, rep, NOW - timedelta(minutes=30))
    with clock.frozen(NOW):
        resp = rep_client.post(
            f"/customers/{owned.id}/followup", data=_form(), headers={"HX-Request": "true"}
        )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "今天已联系 2 次" in html and "仍然保存" in html
    assert len(session.scalars(select(FollowUp)).all()) == 2
    with clock.frozen(NOW):
        resp = rep_client.post(f"/customers/{owned.id}/followup", data=_form(confirm_over_cap="y"))
    assert resp.status_code == 303
    fus = session.scalars(select(FollowUp).order_by(FollowUp.id)).all()
    assert len(fus) == 3 and fus[-1].over_cap is True


def test_frequency_cap_in_block_mode_refuses(rep_client, session, owned, rep, admin):
    store.put(session, "frequency_caps", {"mode": "block", "per_day": 1}, admin, NOW)
    session.commit()
    _save(session, owned, rep, NOW - timedelta(hours=1))
    with clock.frozen(NOW):
        resp = rep_client.post(
            f"/customers/{owned.id}/followup",
            data=_form(confirm_over_cap="y"),
            headers={"HX-Request": "true"},
        )
    assert resp.status_code == 422
    assert "暂不能再记录联系" in resp.get_data(as_text=True)
    assert len(session.scalars(select(FollowUp)).all()) == 1


def test_weekly_cap_counts_seven_local_days(session, owned, rep):
    for days in range(1, 6):  # five contacts on the five previous days
        _save(session, owned, rep, NOW - timedelta(days=days))
    with pytest.raises(services.FrequencyCapWarning, match="近 7 天 5 次"):
        _save(session, owned, rep, NOW, confirm=False)
    session.rollback()
    # Callers that do not ask (e.g. a stage change) save and flag it.
    assert _save(session, owned, rep, NOW, confirm=None).over_cap is True


def test_followup_api_creates_and_reports_errors(api, make, rep, owned):
    token = make.token(rep)
    with clock.frozen(NOW):
        resp = api(token).post(
            f"/api/v1/customers/{owned.id}/followups",
            json={"channel": "visit", "content": "上门拜访", "goal_met": True, "next_plan": "准备报价",
                  "next_contact_at": "2026-03-12T15:00:00+08:00"},
        )  # fmt: skip
        assert resp.status_code == 201, resp.json
        body = resp.json
        assert body["channel"] == "visit" and body["goal_met"] is True
        assert body["next_contact_at"] == "2026-03-12T07:00:00+00:00"
        assert body["next_reminder"]["due_at"] == "2026-03-12T07:00:00+00:00"
        bad = api(token).post(
            f"/api/v1/customers/{owned.id}/followups",
            json={
                "channel": "fax",
                "content": "x",
                "next_plan": "y",
                "next_contact_at": "2020-01-01T00:00:00Z",
            },
        )
        assert bad.status_code == 422
        assert bad.json["error"] == "invalid"
        assert set(bad.json["fields"]) == {"channel", "next_contact_at"}
        missing = api(token).post(f"/api/v1/customers/{owned.id}/followups", json={"channel": "phone"})
        assert missing.status_code == 422
        assert "next_contact_at" in missing.json["fields"] and "content" in missing.json["fields"]
        assert api(token).post("/api/v1/customers/999999/followups", json={}).status_code == 404
    assert len(db.session.scalars(select(FollowUp)).all()) == 1


def test_followup_api_frequency_cap_needs_confirmation(api, make, session, rep, owned):
    token = make.token(rep)
    _save(session, owned, rep, NOW - timedelta(hours=2))
    _save(session, owned, rep, NOW - timedelta(hours=1))
    payload = {
        "channel": "phone",
        "content": "再打一次",
        "next_plan": "等回复",
        "next_contact_at": "2026-03-11T10:00",
    }
    with clock.frozen(NOW):
        resp = api(token).post(f"/api/v1/customers/{owned.id}/followups", json=payload)
        assert resp.status_code == 409 and resp.json["error"] == "frequency_cap" and resp.json["today"] == 2
        resp = api(token).post(
            f"/api/v1/customers/{owned.id}/followups", json=payload | {"confirm_over_cap": True}
        )
        assert resp.status_code == 201 and resp.json["over_cap"] is True


def test_customer_panel_is_registered_and_hidden_from_outsiders(app, session, make, rep, owned):
    assert any(p.name == "followups" for p in CUSTOMER_PANELS)
    with app.test_request_context(), clock.frozen(NOW):
        from flask_login import login_user

        login_user(rep)
        ctx = panel_context(session, owned, rep)
        assert ctx["customer"].id == owned.id
        # Default next contact: +3 days at 10:00 local.
        assert ctx["form"].next_contact_at.data == datetime(2026, 3, 13, 10, 0)
        assert ctx["form"].channel.data == "phone"
        outsider = make.user(Role.REP)
        assert panel_context(session, owned, outsider) is None


def test_panel_form_saves_and_rerenders_the_panel(rep_client, owned):
    with clock.frozen(NOW):
        resp = rep_client.post(
            f"/customers/{owned.id}/followup", data=_form(mode="panel"), headers={"HX-Request": "true"}
        )
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'id="followup-panel"' in html and "电话沟通,客户要报价" in html  # the new timeline item
    assert "crm:followup-saved" in resp.headers["HX-Trigger"]


def test_followup_page_shows_call_and_copy_wechat(rep_client, session, owned):
    owned.wechat = "wx_boss_88"
    session.commit()
    with clock.frozen(NOW):
        html = rep_client.get(f"/customers/{owned.id}/followup").get_data(as_text=True)
    assert f'href="tel:{owned.phone}"' in html
    assert 'data-copy="wx_boss_88"' in html
    assert 'value="2026-03-13T10:00"' in html  # default next contact
    for pick in ('data-pick="1"', 'data-pick="3"', 'data-pick="mon"'):
        assert pick in html
