"""Managers' approvals (issue 20): the 审批 entry with its badge, a notification that opens the decision,
approve / reject with a reason, and 撞单 between customers of the manager's own team."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.intake import merge
from crm.models import Customer, DuplicateConflict, ExtensionRequest, ReminderDelivery, Role, RuleKind
from crm.recycle import services as recycle
from crm.reminders import dispatch
from tests.recycle_support import add_rule, sh

T0 = sh(2026, 3, 2, 9, 0)
DAY = timedelta(days=1)
HX = {"HX-Request": "true"}


@pytest.fixture
def pool(make, rep, manager):
    return make.pool("新线索池", members=[rep], admins=[manager])


def _request(make, pool, rep, manager):
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=30, warn_days=2)
    with clock.frozen(T0):
        customer = make.customer(pool, owner=rep, claimed_at=T0 - DAY, name="远大机电")
        req = recycle.request_extension(db.session, customer.id, rep, 5, "客户在外地出差", T0)
        db.session.commit()
    return req


def _notification_delivery(manager) -> int:
    with clock.frozen(T0):
        dispatch.fan_out(db.session, T0 + timedelta(minutes=1))
        db.session.commit()
    return db.session.scalar(select(ReminderDelivery.id).where(ReminderDelivery.user_id == manager.id))


def test_manager_bottom_bar_has_approvals_with_badge_and_dashboard(manager_client, make, pool, rep, manager):
    _request(make, pool, rep, manager)
    with clock.frozen(T0):
        page = manager_client.get("/").get_data(as_text=True)
    bar = page[page.index('class="bottombar"') :]
    assert "审批" in bar and "看板" in bar and "新建" not in bar
    assert '<span class="nav-badge"' in bar and ">1</span>" in bar


def test_rep_bottom_bar_is_unchanged(rep_client):
    page = rep_client.get("/").get_data(as_text=True)
    bar = page[page.index('class="bottombar"') :]
    assert "新建" in bar and "审批" not in bar and "看板" not in bar
    assert rep_client.get("/approvals/").status_code == 403


def test_notification_opens_the_decision_and_one_tap_approves(manager_client, make, pool, rep, manager):
    req = _request(make, pool, rep, manager)
    delivery_id = _notification_delivery(manager)
    assert delivery_id is not None
    with clock.frozen(T0):
        opened = manager_client.get(f"/notifications/{delivery_id}")
        assert opened.status_code == 302 and opened.headers["Location"].endswith(
            f"/recycle/extension-requests/{req.id}"
        )
        page = manager_client.get(opened.headers["Location"]).get_data(as_text=True)
        assert "客户在外地出差" in page and "批准延期 5 天" in page and "驳回理由" in page
        done = manager_client.post(
            f"/recycle/extension-requests/{req.id}/approve", data={"context": "one"}, headers=HX
        )
    html = done.get_data(as_text=True)
    assert done.status_code == 200 and html.lstrip().startswith(
        '<section class="card" id="extension_request"'
    )
    assert "已批准" in html and "批准延期" not in html
    assert db.session.get(ExtensionRequest, req.id).status == "approved"


def test_reject_needs_a_reason(manager_client, make, pool, rep, manager):
    req = _request(make, pool, rep, manager)
    with clock.frozen(T0):
        blank = manager_client.post(
            f"/recycle/extension-requests/{req.id}/reject", data={"context": "one", "note": " "}, headers=HX
        )
        assert blank.status_code == 422 and "请填写驳回理由" in blank.get_data(as_text=True)
        assert db.session.get(ExtensionRequest, req.id).status == "pending"
        ok = manager_client.post(
            f"/recycle/extension-requests/{req.id}/reject",
            data={"context": "one", "note": "先约面谈"},
            headers=HX,
        )
    assert ok.status_code == 200 and "先约面谈" in ok.get_data(as_text=True)
    assert db.session.get(ExtensionRequest, req.id).status == "rejected"


def test_another_teams_manager_cannot_open_the_request(app, make, pool, rep, manager):
    req = _request(make, pool, rep, manager)
    other = make.user(Role.MANAGER, name="李主管")
    make.team("二组", manager=other)
    client = app.test_client()
    from tests.conftest import login

    login(client, other)
    assert client.get(f"/recycle/extension-requests/{req.id}").status_code == 403


def _conflict(make, pool, owner_a, owner_b) -> DuplicateConflict:
    a = make.customer(pool, owner=owner_a, name="南京明德教育科技有限公司")
    b = make.customer(pool, owner=owner_b, name="南京明德教育科技发展有限公司")
    conflict = DuplicateConflict(customer_id=b.id, candidate_id=a.id, similarity=96.0, status="open",
                                 reason="名称相似", created_at=T0)  # fmt: skip
    db.session.add(conflict)
    db.session.commit()
    return conflict


def test_manager_resolves_a_conflict_between_two_of_their_reps(manager_client, make, pool, rep, manager):
    other_rep = make.user(Role.REP, name="小李")
    other_rep.team = rep.team
    db.session.commit()
    conflict = _conflict(make, pool, rep, other_rep)
    page = manager_client.get("/intake/conflicts")
    assert page.status_code == 200 and "南京明德教育科技发展有限公司" in page.get_data(as_text=True)
    approvals = manager_client.get("/approvals/").get_data(as_text=True)
    assert "查重冲突" in approvals
    resp = manager_client.post(f"/intake/conflicts/{conflict.id}/merge", data={"keep": "candidate"})
    assert resp.status_code == 303
    assert db.session.get(Customer, conflict.customer_id).merged_into_id == conflict.candidate_id


def test_manager_cannot_touch_a_conflict_outside_their_team(manager_client, make, pool, rep, manager):
    stranger = make.user(Role.REP, name="外组")
    conflict = _conflict(make, pool, rep, stranger)
    page = manager_client.get("/intake/conflicts").get_data(as_text=True)
    assert "南京明德教育科技发展有限公司" not in page
    assert (
        manager_client.post(f"/intake/conflicts/{conflict.id}/merge", data={"keep": "candidate"}).status_code
        == 403
    )
    assert manager_client.post(f"/intake/conflicts/{conflict.id}/distinct").status_code == 403
    with pytest.raises(merge.MergeError):
        merge.mark_distinct(db.session, conflict.id, manager, T0)
    assert db.session.get(DuplicateConflict, conflict.id).status == "open"


def test_conflict_merge_sheet_shows_both_records_and_merges_in_place(
    manager_client, make, pool, rep, manager
):
    other_rep = make.user(Role.REP, name="小李")
    other_rep.team = rep.team
    db.session.commit()
    conflict = _conflict(make, pool, rep, other_rep)
    sheet = manager_client.get(f"/intake/conflicts/{conflict.id}/merge", headers=HX)
    html = sheet.get_data(as_text=True)
    assert sheet.status_code == 200 and html.lstrip().startswith('<div class="sheet-card merge-sheet"')
    assert "南京明德教育科技有限公司" in html and "南京明德教育科技发展有限公司" in html
    assert "小王" in html and "小李" in html and "保留已有,合并新线索" in html
    done = manager_client.post(
        f"/intake/conflicts/{conflict.id}/merge", data={"keep": "candidate"}, headers=HX
    )
    body = done.get_data(as_text=True)
    assert (
        done.status_code == 200 and 'id="conflict_list"' in body and 'id="sheet" hx-swap-oob="true"' in body
    )
    assert "crm:toast" in done.headers["HX-Trigger"]
    assert db.session.get(Customer, conflict.customer_id).merged_into_id == conflict.candidate_id
    assert (
        manager_client.get(f"/intake/conflicts/{conflict.id}/merge").status_code == 200
    )  # a page without htmx
