"""The customer list (客户), the customer page with feature panels and the timeline, and editing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm import clock, hooks
from crm.extensions import db
from crm.models import Activity, Channel, Customer, FollowUp, Role, Stage, StageChange, Tag
from crm.pool import services
from tests.conftest import login

HTMX = {"HX-Request": "true"}


def names(html: str) -> list[str]:
    return re.findall(r'<li class="cust-row" id="cust-\d+">.*?<strong>(.*?)</strong>', html, re.S)


def test_reps_see_their_own_customers_managers_their_team_admins_everyone(app, make, rep, manager, admin):
    other_team_rep = make.user(Role.REP, team=make.team("二组"))
    pool = make.pool()
    make.customer(pool, owner=rep, name="甲公司", score=70)
    make.customer(pool, owner=manager, name="乙公司", score=80)
    make.customer(pool, owner=other_team_rep, name="丙公司", score=90)
    make.customer(pool, name="公海客户")

    def listing(user):
        client = app.test_client()
        login(client, user)
        return names(client.get("/customers").get_data(as_text=True))

    assert listing(rep) == ["甲公司"]
    assert listing(manager) == ["乙公司", "甲公司"]
    assert listing(admin) == ["丙公司", "乙公司", "甲公司"]  # holdings; pool customers are on the boards
    client = app.test_client()
    login(client, manager)
    assert names(client.get(f"/customers?owner={rep.id}").get_data(as_text=True)) == ["甲公司"]
    assert names(client.get(f"/customers?owner={other_team_rep.id}").get_data(as_text=True)) == []


def test_list_search_filters_and_sorts(rep_client, make, rep):
    pool = make.pool()
    now = clock.now()
    a = make.customer(pool, owner=rep, name="杭州星河科技", phone="13812345678", phone_key="+8613812345678", grade="A",
                      score=85, last_followup_at=now - timedelta(days=1))  # fmt: skip
    b = make.customer(
        pool, owner=rep, name="深圳蓝海贸易", grade="C", score=30, last_followup_at=now - timedelta(days=9)
    )
    assert names(rep_client.get("/customers?q=138-1234-5678").get_data(as_text=True)) == [a.name]
    assert names(rep_client.get("/customers?q=蓝海").get_data(as_text=True)) == [b.name]
    assert names(rep_client.get("/customers?grade=C").get_data(as_text=True)) == [b.name]
    assert names(rep_client.get("/customers?sort=stale").get_data(as_text=True)) == [b.name, a.name]
    assert names(rep_client.get("/customers?sort=bogus&grade=Z&page=abc").get_data(as_text=True)) == [
        a.name,
        b.name,
    ]


def test_list_paginates_with_load_more(rep_client, make, rep):
    pool = make.pool()
    for i in range(35):
        make.customer(pool, owner=rep, score=i, commit=False)
    db.session.commit()
    first = rep_client.get("/customers").get_data(as_text=True)
    assert len(names(first)) == 30 and "page=2" in first
    second = rep_client.get("/customers?page=2", headers=HTMX).get_data(as_text=True)
    assert len(names(second)) == 5 and "<html" not in second


def test_customer_page_shows_profile_contacts_actions_and_links(rep_client, make, rep):
    pool = make.pool(members=[rep], name="新线索池")
    customer = make.customer(pool, owner=rep, phone="13812345678", wechat="wx_zhang", contact_name="张伟")
    make.contact(customer, name="李经理", phone="13700001111", wechat="li_wx")
    html = rep_client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert 'href="tel:13812345678"' in html and 'href="tel:13700001111"' in html
    assert 'data-copy="wx_zhang"' in html and 'data-copy="li_wx"' in html
    assert "新线索池" in html and "小王" in html
    assert 'id="release"' in html and "退回原因" in html  # the owner may release
    assert 'id="assign"' not in html  # reps do not transfer
    assert f'hx-get="/customers/{customer.id}/timeline"' in html


def test_pool_customer_page_masks_contacts_and_offers_claim(rep_client, make, rep):
    pool = make.pool(members=[rep], mask_contacts=True)
    customer = make.customer(pool, phone="13812345678", wechat="wx_secret", contact_name="张伟")
    html = rep_client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert "138****5678" in html and "13812345678" not in html and "wx_secret" not in html
    assert f'hx-post="/customers/{customer.id}/claim"' in html
    resp = rep_client.post(f"/customers/{customer.id}/claim", headers=HTMX)
    assert resp.headers["HX-Redirect"] == f"/customers/{customer.id}"
    assert "13812345678" in rep_client.get(f"/customers/{customer.id}").get_data(as_text=True)


def test_others_customers_are_forbidden_and_missing_ones_not_found(rep_client, make):
    other = make.user(Role.REP)
    customer = make.customer(make.pool(), owner=other)
    assert rep_client.get(f"/customers/{customer.id}").status_code == 403
    assert rep_client.get(f"/customers/{customer.id}/timeline").status_code == 403
    assert rep_client.get("/customers/999999").status_code == 404
    assert rep_client.post(f"/customers/{customer.id}/tags", data={"tags": "x"}).status_code == 403


def test_a_merged_customers_url_redirects_to_the_winner(rep_client, make, rep):
    pool = make.pool()
    winner = make.customer(pool, owner=rep)
    middle = make.customer(pool, merged_into_id=winner.id)
    loser = make.customer(pool, merged_into_id=middle.id)
    resp = rep_client.get(f"/customers/{loser.id}")
    assert resp.status_code == 301 and resp.headers["Location"] == f"/customers/{winner.id}"


@pytest.fixture
def panels():
    saved = list(hooks.CUSTOMER_PANELS)
    yield hooks
    hooks.CUSTOMER_PANELS[:] = saved


def test_feature_panels_render_in_order_each_in_its_own_card(rep_client, make, rep, panels, tmp_path, app):
    from jinja2 import ChoiceLoader, DictLoader

    app.jinja_loader  # noqa: B018 - make sure the default loader exists before wrapping it
    app.jinja_env.loader = ChoiceLoader([
        DictLoader({"t/due.html": "<h2>回收时间</h2>{{ due }}", "t/score.html": "<h2>评分构成</h2>{{ customer.score }}"}),
        app.jinja_env.loader,
    ])  # fmt: skip
    panels.register_customer_panel(20, "score", "t/score.html", lambda s, c, u: {})
    panels.register_customer_panel(10, "due", "t/due.html", lambda s, c, u: {"due": "3 天后"})
    panels.register_customer_panel(30, "hidden", "t/due.html", lambda s, c, u: None)
    customer = make.customer(make.pool(), owner=rep, score=77)
    html = rep_client.get(f"/customers/{customer.id}").get_data(as_text=True)
    due, score = html.index('id="panel-due"'), html.index('id="panel-score"')
    assert due < score < html.index('id="timeline-card"')
    assert "3 天后" in html and "<h2>评分构成</h2>77" in html and "panel-hidden" not in html


def test_timeline_merges_followups_activities_stages_and_ledger_newest_first(app, rep_client, make, rep):
    pool = make.pool(members=[rep], name="新线索池")
    customer = make.customer(pool)
    merged = make.customer(pool, merged_into_id=customer.id, name="重复线索")
    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    with app.test_request_context(), clock.frozen(t0):
        services.claim(db.session, customer.id, rep, clock.now())
    stages = db.session.scalars(select(Stage).order_by(Stage.position)).all()
    db.session.add_all([
        FollowUp(customer_id=customer.id, user_id=rep.id, at=t0 + timedelta(hours=1), channel=Channel.PHONE,
                 content="聊了需求", next_plan="发报价", next_contact_at=t0 + timedelta(days=2)),
        StageChange(customer_id=customer.id, from_stage_id=stages[0].id, to_stage_id=stages[1].id, user_id=rep.id,
                    at=t0 + timedelta(hours=2)),
        Activity(customer_id=merged.id, kind="duplicate", at=t0 + timedelta(hours=3), title="撞单:同一电话的线索"),
    ])  # fmt: skip
    db.session.commit()
    with app.test_request_context(), clock.frozen(t0 + timedelta(hours=4)):
        services.release(db.session, customer.id, rep, "预算不足", "预算明年才批,采购姓李。", clock.now())
    html = rep_client.get(f"/customers/{customer.id}/timeline", headers=HTMX).get_data(as_text=True)
    order = [
        html.index(s) for s in ("退回公海", "撞单:同一电话的线索", "初步沟通", "聊了需求", "领取</strong>")
    ]
    assert order == sorted(order)
    assert "预算不足" in html and "预算明年才批,采购姓李。" in html and "该轮跟进 0 次" in html
    assert "来自合并的客户" in html and "<html" not in html
    page = rep_client.get(f"/customers/{customer.id}/timeline").get_data(as_text=True)
    assert "<html" in page and "退回公海" in page


def test_timeline_pages_through_everything_once(rep_client, make, rep):
    customer = make.customer(make.pool(), owner=rep)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(45):
        db.session.add(Activity(customer_id=customer.id, kind="note", at=base + timedelta(minutes=i // 3),
                                title=f"记录{i:02d}"))  # fmt: skip
    db.session.commit()
    seen, url = [], f"/customers/{customer.id}/timeline"
    while url:
        html = rep_client.get(url, headers=HTMX).get_data(as_text=True)
        seen += re.findall(r"记录(\d\d)", html)
        more = re.search(r'hx-get="([^"]*before=[^"]*)"', html)
        url = more.group(1).replace("&amp;", "&") if more else None
    assert len(seen) == 45 and len(set(seen)) == 45
    assert rep_client.get(f"/customers/{customer.id}/timeline?before=garbage").status_code == 200


def test_editing_fields_keeps_the_recycle_clocks_and_logs_the_change(rep_client, make, rep):
    claimed = datetime(2026, 2, 20, tzinfo=UTC)
    touched = datetime(2026, 2, 25, tzinfo=UTC)
    customer = make.customer(make.pool(), owner=rep, claimed_at=claimed, last_followup_at=touched,
                             first_contact_at=touched, holding_followups=2, phone="13800000000")  # fmt: skip
    stage_at = customer.last_stage_change_at
    resp = rep_client.post(
        f"/customers/{customer.id}/edit",
        data={"name": "杭州星河科技有限公司", "kind": "company", "phone": "139 1111 2222", "industry": "制造业",
              "email": "Boss@Example.COM"},
    )  # fmt: skip
    assert resp.status_code == 303
    db.session.expire_all()
    fresh = db.session.get(Customer, customer.id)
    assert (fresh.claimed_at, fresh.last_followup_at, fresh.first_contact_at) == (claimed, touched, touched)
    assert fresh.holding_followups == 2 and fresh.last_stage_change_at == stage_at
    assert fresh.phone_key == "+8613911112222" and fresh.email_key == "boss@example.com"
    assert fresh.name_key == "杭州星河科技"
    log = db.session.scalar(select(Activity).where(Activity.customer_id == customer.id))
    assert "电话" in log.title and log.data["changes"]["industry"] == [None, "制造业"]


def test_edit_form_errors_come_back_in_place(rep_client, make, rep):
    customer = make.customer(make.pool(), owner=rep)
    resp = rep_client.post(f"/customers/{customer.id}/edit", data={"name": "", "email": "nope", "phone": "12"},
                           headers=HTMX)  # fmt: skip
    html = resp.get_data(as_text=True)
    assert (
        resp.status_code == 422
        and "请填写客户名称" in html
        and "邮箱格式不正确" in html
        and "至少 5 位" in html
    )


def test_reps_cannot_edit_pool_customers_or_others(rep_client, make, rep):
    pool_customer = make.customer(make.pool(members=[rep]))
    assert rep_client.get(f"/customers/{pool_customer.id}/edit").status_code == 302
    resp = rep_client.post(f"/customers/{pool_customer.id}/edit", data={"name": "改名", "kind": "company"})
    assert resp.status_code == 403 and db.session.get(Customer, pool_customer.id).name != "改名"


def test_contacts_are_added_and_edited_with_one_primary(rep_client, make, rep):
    customer = make.customer(make.pool(), owner=rep)
    first = make.contact(customer, name="甲", is_primary=True)
    resp = rep_client.post(f"/customers/{customer.id}/contacts",
                           data={"new-name": "乙", "new-phone": "+86 137 0000 2222", "new-is_primary": "y"}, headers=HTMX)  # fmt: skip
    assert resp.status_code == 200 and "乙" in resp.get_data(as_text=True)
    db.session.expire_all()
    contacts = {c.name: c for c in db.session.get(Customer, customer.id).contacts}
    assert contacts["乙"].is_primary and not contacts["甲"].is_primary
    assert contacts["乙"].phone_key == "+8613700002222"
    bad = rep_client.post(f"/customers/{customer.id}/contacts", data={"new-name": "丙"}, headers=HTMX)
    assert bad.status_code == 422 and "至少填写一项" in bad.get_data(as_text=True)
    form = rep_client.get(f"/customers/{customer.id}/contacts/{first.id}", headers=HTMX).get_data(
        as_text=True
    )
    assert f'name="c{first.id}-name"' in form
    rep_client.post(f"/customers/{customer.id}/contacts/{first.id}",
                    data={f"c{first.id}-name": "甲总", f"c{first.id}-wechat": "jia"}, headers=HTMX)  # fmt: skip
    db.session.expire_all()
    assert db.session.get(type(first), first.id).name == "甲总"
    other = make.customer(make.pool(), owner=rep)
    assert rep_client.get(f"/customers/{other.id}/contacts/{first.id}").status_code == 404


def test_tags_are_replaced_but_system_tags_stay(rep_client, make, rep):
    # The 高难度 system tag exists from the defaults (crm.bootstrap); create it only if missing.
    hard = db.session.scalar(select(Tag).where(Tag.name == "高难度"))
    if hard is None:
        hard = Tag(name="高难度", system=True)
        db.session.add(hard)
    customer = make.customer(make.pool(), owner=rep)
    customer.tags.append(hard)
    db.session.commit()
    resp = rep_client.post(
        f"/customers/{customer.id}/tags", data={"tags": "重点, 需定制方案,重点"}, headers=HTMX
    )
    assert resp.status_code == 200
    db.session.expire_all()
    assert [t.name for t in db.session.get(Customer, customer.id).tags] == ["重点", "需定制方案", "高难度"]
    resp = rep_client.post(f"/customers/{customer.id}/tags", data={"tags": ""}, headers=HTMX)
    db.session.expire_all()
    assert [t.name for t in db.session.get(Customer, customer.id).tags] == ["高难度"]
    other = make.customer(make.pool(), owner=rep)
    resp = rep_client.post(f"/customers/{other.id}/tags", data={"tags": "高难度"}, headers=HTMX)
    assert (
        resp.status_code == 422
        and "系统标签" in json.loads(resp.headers["HX-Trigger"])["crm:toast"]["message"]
    )


def test_demo_data_gets_contacts_wechat_ids_and_tags(app):
    from crm.demo import seed_demo
    from crm.models import Contact

    with app.test_request_context():
        seed_demo(db.session, customers=40, seed=7, password="demo-pass-1", now=clock.now())
        db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Contact)) > 0
    assert (
        db.session.scalar(select(func.count()).select_from(Customer).where(Customer.wechat.is_not(None))) > 0
    )
    assert db.session.scalar(select(func.count()).select_from(Tag).where(Tag.name == "重点客户")) == 1
