"""The pool list and the pool board as a rep and a manager see them: ordering, filters, search, keyset
pagination, masking, fair release, and claiming / assigning with htmx (rows swapped in place)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Customer, EventKind, PoolEvent, Role, Tag
from tests.conftest import login

HTMX = {"HX-Request": "true"}


def toast_of(resp) -> str:
    return json.loads(resp.headers["HX-Trigger"])["crm:toast"]["message"]


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="pool-row[^"]*" id="c-(\d+)"', html)]


def test_pool_list_shows_my_pools_with_counts_and_todays_claims(rep_client, make, rep):
    mine = make.pool(members=[rep], name="新线索池", daily_claim_limit=5)
    make.pool(name="别人的池")
    for _ in range(3):
        make.customer(mine)
    make.customer(mine, owner=rep)
    html = rep_client.get("/pools").get_data(as_text=True)
    assert "新线索池" in html and "别人的池" not in html
    assert re.search(r'<div class="value">3</div><div class="label">可领客户', html)
    assert "0/5" in html


def test_board_lists_claimable_customers_best_score_first(rep_client, make, rep):
    pool = make.pool(members=[rep])
    low, high, mid = (
        make.customer(pool, score=20),
        make.customer(pool, score=90),
        make.customer(pool, score=55),
    )
    make.customer(pool, owner=rep, score=99)  # owned: not on the board
    make.customer(pool, score=95, visible_from=clock.now() + timedelta(hours=3))  # fair release: hidden
    make.customer(pool, score=97, merged_into_id=high.id)  # merged away: hidden
    html = rep_client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert row_ids(html) == [high.id, mid.id, low.id]


def test_keyset_pagination_walks_every_customer_once(rep_client, make, rep):
    pool = make.pool(members=[rep])
    ids = [make.customer(pool, score=s % 7, commit=False).id for s in range(65)]
    db.session.commit()
    seen, url = [], f"/pools/{pool.id}"
    while url:
        html = rep_client.get(url, headers=HTMX).get_data(as_text=True)
        seen += row_ids(html)
        more = re.search(r'hx-get="([^"]*cursor=[^"]*)"', html)
        url = more.group(1).replace("&amp;", "&") if more else None
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    scores = {c.id: c.score for c in db.session.scalars(select(Customer))}
    assert seen == sorted(seen, key=lambda i: (scores[i], i), reverse=True)


def test_load_more_keeps_the_filters(rep_client, make, rep):
    pool = make.pool(members=[rep])
    for i in range(35):
        make.customer(pool, region="华东" if i % 2 else "华南", commit=False)
    db.session.commit()
    first = rep_client.get(f"/pools/{pool.id}?region=华东", headers=HTMX).get_data(as_text=True)
    more = re.search(r'hx-get="([^"]*cursor=[^"]*)"', first)
    assert more is None  # 17 rows: one page
    everything = rep_client.get(f"/pools/{pool.id}", headers=HTMX).get_data(as_text=True)
    assert len(row_ids(first)) == 17 and len(row_ids(everything)) == 30


def test_filters_region_industry_grade_tag_source_and_today(rep_client, make, rep):
    pool = make.pool(members=[rep])
    tag = Tag(name="展会")
    db.session.add(tag)
    target = make.customer(
        pool, region="华东", industry="制造业", grade="A", score=85, source="form", channel="展会"
    )
    target.tags.append(tag)
    target.pool_entered_at = clock.now()
    db.session.commit()
    make.customer(pool, region="华南", industry="制造业", grade="A", score=88)
    make.customer(pool, region="华东", industry="教育", grade="B", score=60)
    base = f"/pools/{pool.id}"
    for query in (
        "region=华东&industry=制造业",
        "grade=A&region=华东",
        f"tag={tag.id}",
        "source=展会",
        "new=1",
    ):
        html = rep_client.get(f"{base}?{query}", headers=HTMX).get_data(as_text=True)
        assert row_ids(html) == [target.id], query
    full = rep_client.get(f"{base}?grade=A").get_data(as_text=True)
    assert "<option selected>A</option>" in full and "清除筛选" in full


def test_search_by_phone_normalises_the_input_and_by_name_matches_parts(rep_client, make, rep):
    pool = make.pool(members=[rep])
    by_phone = make.customer(
        pool, phone="13812345678", phone_key="+8613812345678", name="杭州星河科技有限公司"
    )
    by_contact = make.customer(pool)
    make.contact(by_contact, phone="13900001111", phone_key="+8613900001111")
    make.customer(pool, name="深圳蓝海贸易有限公司")
    base = f"/pools/{pool.id}?q="
    for typed in ("138 1234 5678", "+86 138-1234-5678", "008613812345678"):
        assert row_ids(rep_client.get(base + typed, headers=HTMX).get_data(as_text=True)) == [by_phone.id]
    assert row_ids(rep_client.get(base + "139-0000-1111", headers=HTMX).get_data(as_text=True)) == [
        by_contact.id
    ]
    assert row_ids(rep_client.get(base + "星河", headers=HTMX).get_data(as_text=True)) == [by_phone.id]
    # A partial number does not probe masked phones; LIKE wildcards are literal.
    assert row_ids(rep_client.get(base + "5678", headers=HTMX).get_data(as_text=True)) == []
    assert row_ids(rep_client.get(base + "%25", headers=HTMX).get_data(as_text=True)) == []


def test_masking_pools_show_masked_contacts_to_reps_and_full_ones_to_pool_admins(
    app, rep_client, make, rep, manager
):
    pool = make.pool(members=[rep], admins=[manager], mask_contacts=True)
    make.customer(pool, phone="13812345678", contact_name="张伟")
    rep_html = rep_client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert "138****5678" in rep_html and "13812345678" not in rep_html and "张***" in rep_html
    admin_client = app.test_client()
    login(admin_client, manager)
    assert "13812345678" in admin_client.get(f"/pools/{pool.id}").get_data(as_text=True)


def test_claiming_from_the_board_swaps_the_row_and_refreshes_the_holding_counter(rep_client, make, rep):
    pool = make.pool(members=[rep], daily_claim_limit=3)
    customer = make.customer(pool, phone="13812345678")
    resp = rep_client.post(f"/customers/{customer.id}/claim", data={"ctx": "board"}, headers=HTMX)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert f'id="c-{customer.id}"' in html and "已领取" in html and 'href="tel:13812345678"' in html
    events = json.loads(resp.headers["HX-Trigger"])
    assert events["holding-changed"] == {"held": 1, "cap": 20}
    assert events["crm:toast"]["message"].startswith("已领取")
    counter = rep_client.get(f"/pools/{pool.id}/counter", headers=HTMX).get_data(as_text=True)
    assert re.search(r"data-held>1<", counter) and re.search(r"data-claimed>1<", counter)


def test_second_rep_clicking_claim_on_a_taken_row_gets_the_owners_name(app, rep_client, make, rep):
    other = make.user(Role.REP, name="小李")
    pool = make.pool(members=[rep, other], mask_contacts=True)
    customer = make.customer(pool, phone="13812345678")
    rep_client.post(f"/customers/{customer.id}/claim", data={"ctx": "board"}, headers=HTMX)
    other_client = app.test_client()
    login(other_client, other)
    resp = other_client.post(f"/customers/{customer.id}/claim", data={"ctx": "board"}, headers=HTMX)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "已被 小王 领取。" in html and "领取</button>" not in html
    assert "138****5678" in html and "13812345678" not in html  # contacts stay masked for the loser
    assert json.loads(resp.headers["HX-Trigger"])["crm:toast"]["level"] == "error"
    assert db.session.get(Customer, customer.id).owner_id == rep.id


def test_a_refused_claim_without_htmx_redirects_back_with_the_message(rep_client, make, rep):
    pool = make.pool(members=[rep], daily_claim_limit=1)
    a, b = make.customer(pool), make.customer(pool)
    rep_client.post(f"/customers/{a.id}/claim", data={"next": f"/pools/{pool.id}"})
    resp = rep_client.post(f"/customers/{b.id}/claim", data={"next": f"/pools/{pool.id}"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/pools/{pool.id}")
    page = rep_client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert "今日已领 1/1" in page
    assert db.session.get(Customer, b.id).owner_id is None


def test_forged_ids_get_a_clear_answer_and_change_nothing(rep_client, make, rep):
    secret_pool = make.pool(name="机密池")
    hidden = make.customer(secret_pool)
    assert rep_client.get(f"/pools/{secret_pool.id}").status_code == 403
    assert rep_client.get("/pools/424242").status_code == 404
    resp = rep_client.post(f"/customers/{hidden.id}/claim", data={"ctx": "board"}, headers=HTMX)
    assert (
        resp.status_code == 204
        and "不是「机密池」的成员" in json.loads(resp.headers["HX-Trigger"])["crm:toast"]["message"]
    )
    resp = rep_client.post("/customers/424242/claim", data={"ctx": "board"}, headers=HTMX)
    assert resp.status_code in (204, 200) and "客户不存在" in toast_of(resp)
    assert (
        rep_client.post(
            f"/pools/{secret_pool.id}/assign", data={"customer_ids": "x", "user_id": "y"}
        ).status_code
        == 303
    )
    assert db.session.get(Customer, hidden.id).owner_id is None


def test_manager_bulk_assigns_from_the_board_and_the_list_refreshes(manager_client, make, rep, manager):
    pool = make.pool(members=[rep])
    a, b, c = make.customer(pool, score=90), make.customer(pool, score=80), make.customer(pool, score=70)
    board = manager_client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert 'id="bulk-assign"' in board and f'<option value="{rep.id}"' in board
    resp = manager_client.post(
        f"/pools/{pool.id}/assign", data={"customer_ids": [a.id, b.id], "user_id": rep.id}, headers=HTMX
    )
    assert resp.status_code == 200
    assert row_ids(resp.get_data(as_text=True)) == [c.id]
    assert "已分配 2 个客户 给 小王" in json.loads(resp.headers["HX-Trigger"])["crm:toast"]["message"]
    assert {
        e.customer_id
        for e in db.session.scalars(select(PoolEvent).where(PoolEvent.kind == EventKind.ASSIGNED))
    } == {a.id, b.id}


def test_bulk_assign_with_bad_input_answers_422_without_swapping(manager_client, make, rep):
    pool = make.pool(members=[rep])
    a = make.customer(pool)
    for data in ({"user_id": rep.id}, {"customer_ids": [a.id]}, {"customer_ids": ["abc"], "user_id": rep.id}):
        resp = manager_client.post(f"/pools/{pool.id}/assign", data=data, headers=HTMX)
        assert resp.status_code == 422 and resp.headers["HX-Reswap"] == "none"
    resp = manager_client.post(
        f"/pools/{pool.id}/assign", data={"customer_ids": [a.id], "user_id": 99999}, headers=HTMX
    )
    assert resp.status_code == 422 and "接收人不存在" in toast_of(resp)
    assert db.session.get(Customer, a.id).owner_id is None


def test_single_assign_from_a_row_returns_the_assigned_row(manager_client, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    form = manager_client.get(f"/customers/{customer.id}/assign?ctx=board", headers=HTMX).get_data(
        as_text=True
    )
    assert 'name="user_id"' in form and "<html" not in form
    resp = manager_client.post(
        f"/customers/{customer.id}/assign", data={"user_id": rep.id, "ctx": "board"}, headers=HTMX
    )
    assert resp.status_code == 200 and "已把" in resp.get_data(as_text=True)
    other = make.customer(pool)
    resp = manager_client.post(
        f"/customers/{other.id}/assign", data={"user_id": 77777, "ctx": "board"}, headers=HTMX
    )
    assert resp.status_code == 422 and resp.headers["HX-Retarget"] == f"#assign-slot-{other.id}"
    assert "接收人不存在" in resp.get_data(as_text=True)


def test_reps_see_no_assign_controls_and_cannot_post_assignments(rep_client, make, rep):
    pool = make.pool(members=[rep])
    customer = make.customer(pool)
    board = rep_client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert 'id="bulk-assign"' not in board and ">分配<" not in board
    resp = rep_client.post(f"/customers/{customer.id}/assign", data={"user_id": rep.id})
    assert resp.status_code == 403
    assert db.session.get(Customer, customer.id).owner_id is None


def test_pool_list_counts_stop_at_the_cap_and_say_so(rep_client, make, rep, monkeypatch):
    from crm.pool import board

    monkeypatch.setattr(board, "COUNT_CAP", 2)
    big, small = make.pool(members=[rep], name="大池"), make.pool(members=[rep], name="小池")
    for _ in range(3):
        make.customer(big)
    make.customer(small)
    make.customer(small, visible_from=clock.now() + timedelta(hours=1))
    html = rep_client.get("/pools").get_data(as_text=True)
    assert re.search(r'<div class="value">2\+</div><div class="label">可领客户', html)
    assert re.search(r'<div class="value">1</div><div class="label">可领客户', html)
    assert re.search(r'<div class="value">1</div><div class="label">待定时释放', html)


def _claim_button(html: str, customer_id: int) -> str:
    row = html[html.index(f'id="c-{customer_id}"') :]
    row = row[: row.index("</li>")]
    return row[row.index("<button") : row.index("</button>")]


def test_claim_shows_disabled_with_the_reason_when_the_claim_would_be_refused(app, make, rep):
    from crm.models import PrevOwnerRule

    pool = make.pool(
        members=[rep], daily_claim_limit=5, prev_owner_rule=PrevOwnerRule.COOLDOWN, prev_owner_days=7
    )
    free = make.customer(pool)
    hard = make.customer(pool, senior_only=True)
    mine_before = make.customer(pool, last_owner_id=rep.id, last_released_at=clock.now() - timedelta(days=2))
    client = app.test_client()
    login(client, rep)
    html = client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert "disabled" not in _claim_button(html, free.id)
    assert "disabled" in _claim_button(html, hard.id) and "仅资深销售可领取" in html
    assert "disabled" in _claim_button(html, mine_before.id) and "冷却期内" in html
    # At the daily limit every row says so, computed once for the page.
    for _ in range(5):
        client.post(f"/customers/{make.customer(pool).id}/claim", headers=HTMX)
    html = client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert "disabled" in _claim_button(html, free.id) and "今日已领 5/5" in html


def test_claim_is_disabled_at_the_holding_cap(app, make):
    capped = make.user(Role.REP, cap=1)
    pool = make.pool(members=[capped])
    make.customer(pool, owner=capped)
    waiting = make.customer(pool)
    client = app.test_client()
    login(client, capped)
    html = client.get(f"/pools/{pool.id}").get_data(as_text=True)
    assert "disabled" in _claim_button(html, waiting.id) and "持有已达上限 1/1" in html
