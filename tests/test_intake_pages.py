"""Intake pages: 新建 with as-you-type duplicate warnings, lead-form administration, the admin tabs."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.extensions import db
from crm.models import Activity, Customer, PoolEvent


def test_the_new_tab_shows_the_lead_form(rep_client, make, rep):
    page = rep_client.get("/leads/new")
    assert page.status_code == 200
    assert 'name="phone"' in page.text and "保存线索" in page.text
    assert 'hx-post="/leads/check"' in page.text
    assert "新建" in page.text  # the bottom-bar tab


def test_manual_entry_creates_a_lead_in_the_chosen_pool(rep_client, make, rep):
    pool = make.pool("华东区域池", members=[rep])
    resp = rep_client.post(
        "/leads/new",
        data={
            "name": "常州天成机械有限公司",
            "contact_name": "蒋工",
            "phone": "13861234567",
            "pool_id": pool.id,
            "industry": "制造业",
            "company_size": "300",
        },  # fmt: skip
    )
    assert resp.status_code == 303
    customer = db.session.scalar(select(Customer))
    assert customer.pool_id == pool.id and customer.source == "manual" and customer.owner_id is None
    assert db.session.scalar(select(PoolEvent.actor_id)) == rep.id
    follow = rep_client.get(resp.headers["Location"])
    assert "已创建线索「常州天成机械有限公司」" in follow.text


def test_manual_entry_can_claim_the_new_lead(rep_client, make, rep):
    pool = make.pool("线索池", kind="lead", members=[rep])
    resp = rep_client.post("/leads/new", data={"contact_name": "个人客户", "phone": "13861230000", "pool_id": pool.id,
                                               "take": "y"})  # fmt: skip
    assert resp.status_code == 303
    assert db.session.scalar(select(Customer.owner_id)) == rep.id


def test_manual_entry_errors_come_back_in_place(rep_client, make, rep):
    resp = rep_client.post("/leads/new", data={"name": "只有名字"}, headers={"HX-Request": "true"})
    assert resp.status_code == 422
    assert 'id="lead_form"' in resp.text and "请至少填写电话、邮箱或微信中的一项" in resp.text
    assert "<html" not in resp.text  # the fragment only
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_typing_a_known_phone_warns_of_the_duplicate_and_its_owner(rep_client, make, rep, manager):
    pool = make.pool(members=[rep])
    make.customer(pool, owner=manager, name="无锡启明光电有限公司", phone="13912340000")
    warn = rep_client.post("/leads/check", data={"phone": "139 1234 0000"})
    assert warn.status_code == 200 and 'id="dup_check"' in warn.text
    assert "无锡启明光电有限公司" in warn.text and manager.name in warn.text
    similar = rep_client.post("/leads/check", data={"name": "无锡启明光电科技有限公司"})
    assert "名称相似" in similar.text and "无锡启明光电有限公司" in similar.text
    quiet = rep_client.post("/leads/check", data={"name": "完全不同的公司", "phone": "13700000000"})
    assert "重复客户" not in quiet.text and "名称相似" not in quiet.text


def test_saving_an_exact_duplicate_is_blocked_and_shows_who_owns_it(rep_client, make, rep, manager):
    pool = make.pool(members=[rep])
    make.customer(pool, owner=manager, phone="13912340000", name="无锡启明光电有限公司")
    resp = rep_client.post(
        "/leads/new", data={"contact_name": "同一个人", "phone": "13912340000", "pool_id": pool.id},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert resp.status_code == 422 and "已有这个客户,未创建" in resp.text and manager.name in resp.text
    assert "查看" in resp.text and "仍然创建" not in resp.text  # only admins may override
    assert 'value="13912340000"' in resp.text  # what the creator typed stays in the form
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    assert db.session.scalar(select(func.count()).select_from(Activity)) == 0


def test_a_pool_duplicate_offers_claiming_the_existing_customer(rep_client, make, rep):
    pool = make.pool(members=[rep])
    existing = make.customer(pool, name="无锡启明光电有限公司", phone="13700001111")
    resp = rep_client.post("/leads/new", data={"name": "无锡启明光电有限公司", "phone": "13800002222",
                                               "pool_id": pool.id}, headers={"HX-Request": "true"})  # fmt: skip
    assert resp.status_code == 422 and "领取已有" in resp.text
    assert f'action="/customers/{existing.id}/claim"' in resp.text
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


def test_admins_may_still_save_a_duplicate_and_it_is_ledgered(admin_client, make, admin, manager):
    pool = make.pool(members=[admin])
    owned = make.customer(pool, owner=manager, phone="13912340000")
    resp = admin_client.post(
        "/leads/new",
        data={"contact_name": "同一个人", "phone": "13912340000", "pool_id": pool.id, "force": "1"},
    )
    assert resp.status_code == 303
    assert db.session.scalar(select(Activity.customer_id)) == owned.id
    reasons = db.session.scalars(select(PoolEvent.reason).where(PoolEvent.customer_id == owned.id)).all()
    assert "管理员确认疑似重复后仍然创建" in reasons
    follow = admin_client.get(resp.headers["Location"])
    assert "撞单" in follow.text and manager.name in follow.text


def test_admin_tabs_include_the_intake_and_scoring_screens(admin_client):
    page = admin_client.get("/intake/conflicts")
    for label in ("查重冲突", "批量导入", "线索表单", "评分规则", "评分报表"):
        assert label in page.text


def test_admins_create_a_form_and_get_an_embed_snippet(admin_client, make, admin):
    pool = make.pool("官网线索池", kind="lead", admins=[admin])
    resp = admin_client.post(
        "/intake/forms",
        data={
            "name": "白皮书下载",
            "slug": "whitepaper",
            "pool_id": pool.id,
            "channel": "官网",
            "campaign": "白皮书",
            "thank_you": "资料已发送到您的邮箱",
            "fields": ["name", "email"],
            "enabled": "y",
        },  # fmt: skip
    )
    assert resp.status_code == 303
    page = admin_client.get(resp.headers["Location"])
    assert "&lt;iframe" in page.text and "/f/whitepaper" in page.text
    clash = admin_client.post("/intake/forms", data={"name": "x", "slug": "whitepaper", "pool_id": pool.id,
                                                     "thank_you": "谢谢"})  # fmt: skip
    assert clash.status_code == 422 and "已被其他表单使用" in clash.text
