"""Pool administration: admins create and edit pools; pool admins edit their own pools (not the admins);
every change is audited; release reasons and the default cap; departures from the admin user page."""

from __future__ import annotations

from sqlalchemy import select

from crm.extensions import db
from crm.models import Customer, EventKind, Pool, PoolEvent, Role, SettingsAudit, User
from crm.pool import manage
from tests.conftest import login

VALID = {
    "name": "华南区域池",
    "description": "华南客户",
    "kind": "region",
    "enabled": "y",
    "daily_claim_limit": "4",
    "prev_owner_rule": "priority",
    "prev_owner_days": "3",
    "mask_contacts": "y",
    "auto_assign_strategy": "load_balance",
    "release_times": "15:00, 9:30",
    "fair_release": "y",
    "nurture_max_days": "60",
    "region": "华南",
}


def test_admin_creates_a_pool_with_members_teams_admins_and_rules(admin_client, admin, rep, manager):
    data = dict(VALID, member_user_ids=[rep.id], member_team_ids=[rep.team_id], admin_user_ids=[manager.id])
    resp = admin_client.post("/admin/pools/new", data=data)
    assert resp.status_code == 303
    pool = db.session.scalar(select(Pool).where(Pool.name == "华南区域池"))
    assert (pool.daily_claim_limit, pool.prev_owner_rule, pool.prev_owner_days) == (4, "priority", 3)
    assert pool.release_times == ["09:30", "15:00"] and pool.fair_release and pool.mask_contacts
    assert (
        pool.auto_assign_strategy == "load_balance" and pool.region == "华南" and pool.nurture_max_days == 60
    )
    assert manage.member_user_ids(pool) == [rep.id] and manage.member_team_ids(pool) == [rep.team_id]
    assert manage.admin_user_ids(pool) == [manager.id]
    audit = db.session.scalar(select(SettingsAudit).where(SettingsAudit.section == "pools"))
    assert (
        audit.object_id == pool.id and audit.user_id == admin.id and audit.summary == "新建公海「华南区域池」"
    )


def test_invalid_pool_forms_come_back_422_with_errors_in_place(admin_client, make):
    make.pool(name="新线索池")
    cases = [
        ({"name": "新线索池"}, "已有同名公海"),
        ({"release_times": "25:00"}, "HH:MM"),
        ({"daily_claim_limit": "0"}, "1–1000"),
        ({"prev_owner_days": ""}, "请填写原负责人规则的天数"),
        ({"fair_release": "y", "release_times": ""}, "至少填写一个释放时间"),
        ({"member_user_ids": ["99999"]}, "不存在的用户"),
        ({"member_user_ids": ["abc"]}, "编号必须是整数"),
    ]
    for change, message in cases:
        resp = admin_client.post(
            "/admin/pools/new", data=dict(VALID, **change), headers={"HX-Request": "true"}
        )
        assert resp.status_code == 422, change
        assert message in resp.get_data(as_text=True), change
    assert db.session.scalar(select(Pool).where(Pool.name == "华南区域池")) is None


def test_a_pool_admin_edits_their_pool_but_cannot_change_its_admins(app, make, rep):
    ops = make.user(Role.REP, name="运营")
    pool = make.pool(name="新线索池", admins=[ops], members=[rep])
    client = app.test_client()
    login(client, ops)
    page = client.get(f"/pools/{pool.id}/settings").get_data(as_text=True)
    assert "公海管理员由系统管理员指定" in page and 'name="admin_user_ids"' not in page
    data = dict(
        VALID, name="新线索池", daily_claim_limit="9", member_user_ids=[rep.id], admin_user_ids=[rep.id]
    )
    assert client.post(f"/pools/{pool.id}/settings", data=data).status_code == 303
    db.session.expire_all()
    pool = db.session.get(Pool, pool.id)
    assert pool.daily_claim_limit == 9 and manage.admin_user_ids(pool) == [ops.id]
    audit = db.session.scalars(select(SettingsAudit).where(SettingsAudit.object_id == pool.id)).all()[-1]
    assert audit.before["daily_claim_limit"] == 3 and audit.after["daily_claim_limit"] == 9
    assert "daily_claim_limit" in audit.summary


def test_members_who_are_not_pool_admins_cannot_open_or_post_the_settings(rep_client, make, rep):
    pool = make.pool(members=[rep])
    resp = rep_client.get(f"/pools/{pool.id}/settings")
    assert resp.status_code == 302
    assert rep_client.post(f"/pools/{pool.id}/settings", data=dict(VALID, name="改名")).status_code == 403
    assert db.session.get(Pool, pool.id).name != "改名"
    assert rep_client.get("/admin/pools").status_code == 403


def test_admin_pools_tab_is_in_the_admin_navigation(admin_client, make):
    make.pool(name="沉默客户池")
    html = admin_client.get("/admin/pools").get_data(as_text=True)
    assert "沉默客户池" in html and 'href="/admin/pools"' in html
    assert 'href="/admin/pools"' in admin_client.get("/admin/users").get_data(as_text=True)


def test_release_reasons_and_default_cap_are_edited_and_audited(admin_client):
    resp = admin_client.post(
        "/admin/pools/rules",
        data={"release_reasons": "预算不足\n\n联系不上\n预算不足", "default_holding_cap": "15"},
    )
    assert resp.status_code == 303
    from crm.settings import store

    assert store.get(db.session, "pool") == {
        "release_reasons": ["预算不足", "联系不上"],
        "default_holding_cap": 15,
        "won_count_toward_cap": False,  # the checkbox was not ticked
    }
    bad = admin_client.post("/admin/pools/rules", data={"release_reasons": "", "default_holding_cap": "0"})
    assert bad.status_code == 422


def test_deleting_a_pool_needs_it_empty_and_keeps_history(admin_client, make):
    full = make.pool(name="有客户")
    make.customer(full)
    empty = make.pool(name="空池")
    assert admin_client.post(f"/pools/{full.id}/delete").status_code == 303
    assert db.session.get(Pool, full.id).deleted_at is None
    admin_client.post(f"/pools/{empty.id}/delete")
    gone = db.session.get(Pool, empty.id)
    assert gone.deleted_at is not None and not gone.enabled
    assert admin_client.get(f"/pools/{empty.id}").status_code == 404
    # The name is free again.
    assert admin_client.post("/admin/pools/new", data=dict(VALID, name="空池")).status_code == 303


def test_admin_user_page_hands_over_all_customers_and_can_deactivate(admin_client, make, rep, manager):
    colleague = make.user(Role.REP, team=rep.team, name="小赵", cap=50)
    pool = make.pool(members=[rep])
    held = [make.customer(pool, owner=rep).id for _ in range(3)]
    page = admin_client.get(f"/admin/users/{rep.id}").get_data(as_text=True)
    assert "小王 目前负责 3 个客户" in page and "移交全部客户" in page
    resp = admin_client.post(
        f"/users/{rep.id}/handover",
        data={"ho-mode": "user", "ho-user_id": colleague.id, "ho-reason": "离职交接", "ho-deactivate": "y"},
    )
    assert resp.status_code == 303
    db.session.expire_all()
    assert {c.owner_id for c in db.session.scalars(select(Customer).where(Customer.id.in_(held)))} == {
        colleague.id
    }
    assert not db.session.get(User, rep.id).active
    rows = db.session.scalars(select(PoolEvent).where(PoolEvent.kind == EventKind.TRANSFERRED)).all()
    assert len(rows) == 3 and {r.note for r in rows} == {"离职交接"}
    assert "目前负责" not in admin_client.get(f"/admin/users/{rep.id}").get_data(as_text=True)


def test_handover_back_to_pools_and_bad_input(admin_client, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    resp = admin_client.post(f"/users/{rep.id}/handover", data={"ho-mode": "user"})
    assert resp.status_code == 303 and db.session.get(Customer, customer.id).owner_id == rep.id
    resp = admin_client.post(f"/users/{rep.id}/handover", data={"ho-mode": "user", "ho-user_id": "99999"})
    assert db.session.get(Customer, customer.id).owner_id == rep.id
    admin_client.post(f"/users/{rep.id}/handover", data={"ho-mode": "pool"})
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).owner_id is None
    assert admin_client.post("/users/99999/handover", data={"ho-mode": "pool"}).status_code == 404
