"""De-duplication on messy input: a batch checked against itself, letters in phones, dirty emails, a good
lead with an unusable email, Traditional/Simplified company names — through the API and the import."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from crm import clock
from crm.extensions import db
from crm.intake import normalize
from crm.intake.grams import recompute_keys
from crm.intake.services import drain_pending_checks
from crm.models import Contact, Customer, DuplicateConflict, NameGram
from tests.test_import import _batch, _preview, _upload, _xlsx


@pytest.fixture
def pool(make, manager, rep):
    return make.pool("新线索池", kind="lead", admins=[manager], members=[rep])


@pytest.fixture
def leads_token(make, rep):
    return make.token(rep, "leads")


@pytest.fixture
def write_token(make, rep):
    """Answers of a ``write`` token name the existing customer of a duplicate (a leads token's do not)."""
    return make.token(rep, "write")


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw",
    ["1-800-FLOWERS", "138OO138000", "1380013800O", "+1 415 555 ABCD", "13800138000 abc", "call 13800138000"],
)
def test_letters_in_a_phone_make_it_invalid_never_keypad_digits(raw):
    assert normalize.phone_key(raw) is None
    assert "字母" in normalize.phone_error(raw)


@pytest.mark.parametrize("raw", ["tel:13800138000", "TEL: +86 138 0013 8000", "138-0013-8000 ext. 12"])
def test_a_leading_tel_and_an_extension_marker_are_the_only_letters_allowed(raw):
    assert normalize.phone_key(raw) == "+8613800138000"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("mailto:ZhangSan@Example.com", "ZhangSan@Example.com"),
        ("MAILTO:zhangsan@example.com?subject=询价", "zhangsan@example.com"),
        ("zhang\u200bsan@example.com", "zhangsan@example.com"),
        ("\ufeffzhangsan@example.com\u00a0", "zhangsan@example.com"),
        ("张三 <zhangsan@example.com>", "zhangsan@example.com"),
        ('"Zhang San" <zhangsan@example.com>', "zhangsan@example.com"),
        ("zhangsan＠example。com", "zhangsan@example.com"),
        ("ｚｈａｎｇｓａｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "zhangsan@example.com"),
    ],
)
def test_messy_emails_clean_into_one_key(raw, clean):
    assert normalize.email_clean(raw) == clean
    assert normalize.email_key(raw) == "zhangsan@example.com"
    assert normalize.email_valid(raw)


def test_traditional_and_simplified_company_names_fold_into_one_key():
    assert normalize.name_key("騰訊科技(深圳)有限公司") == normalize.name_key("腾讯科技(深圳)有限公司")
    assert normalize.name_key("鴻海精密工業股份有限公司") == normalize.name_key("鸿海精密工业有限公司")
    assert normalize.name_key("ACME Co., Ltd.") == "acme"


# ---------------------------------------------------------------- API


def test_one_api_array_with_the_same_company_twice_opens_a_conflict(api, leads_token, pool):
    resp = api(leads_token).post(
        "/api/v1/leads",
        json=[
            {"name": "成都天府云图科技有限公司", "phone": "13800138001"},
            {"name": "成都天府云图科技有限责任公司", "phone": "13900139002"},
        ],
    )
    assert resp.status_code == 200
    first, second = resp.json["results"]
    assert first["status"] == second["status"] == "created"
    drain_pending_checks(db.session, clock.now())  # the API checks similar names in the background
    db.session.expire_all()
    conflicts = db.session.execute(
        select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id)
    ).all()
    assert conflicts == [(second["id"], first["id"])]


def test_one_api_array_with_traditional_and_simplified_names_opens_a_conflict(api, leads_token, pool):
    resp = api(leads_token).post(
        "/api/v1/leads",
        json=[
            {"name": "騰訊雲端運算有限公司", "phone": "13800138001"},
            {"name": "腾讯云端运算有限公司", "phone": "13900139002"},
        ],
    )
    first, second = resp.json["results"]
    drain_pending_checks(db.session, clock.now())
    db.session.expire_all()
    assert db.session.execute(
        select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id)
    ).all() == [(second["id"], first["id"])]


def test_the_same_email_in_messy_forms_is_one_customer_stored_clean(api, write_token, pool):
    first = api(write_token).post(
        "/api/v1/leads", json={"name": "星河科技", "email": "张三 <ZhangSan@xinghe.cn>"}
    )
    assert first.status_code == 201
    customer = db.session.get(Customer, first.json["id"])
    assert customer.email == "ZhangSan@xinghe.cn" and customer.email_key == "zhangsan@xinghe.cn"
    for raw in ("mailto:zhangsan@xinghe.cn", "zhang\u200bsan＠xinghe。cn", "\ufeffzhangsan@xinghe.cn\u00a0"):
        again = api(write_token).post("/api/v1/leads", json={"name": "星河", "email": raw})
        assert (again.status_code, again.json["id"], again.json["matched_on"]) == (200, customer.id, "email")
    assert _count(Customer) == 1


def test_a_duplicate_answer_carries_the_existing_customers_score_and_grade(api, write_token, pool):
    first = api(write_token).post("/api/v1/leads", json={"name": "星河科技", "phone": "13800138000"}).json
    again = api(write_token).post("/api/v1/leads", json={"name": "星河科技", "phone": "138 0013 8000"})
    customer = db.session.get(Customer, first["id"])
    assert again.status_code == 200
    assert (again.json["score"], again.json["grade"]) == (customer.score, customer.grade)
    assert again.json["grade"] is not None


def test_a_phone_with_letters_is_refused_not_merged_by_keypad(api, leads_token, pool):
    api(leads_token).post("/api/v1/leads", json={"name": "甲公司", "phone": "+1 800 356 9377"})
    resp = api(leads_token).post("/api/v1/leads", json={"name": "乙公司", "phone": "1-800-FLOWERS"})
    assert resp.status_code == 422 and "phone" in resp.json["fields"]
    assert _count(Customer) == 1


def test_a_good_phone_with_an_unusable_email_is_taken_in_with_the_email_flagged(api, leads_token, pool):
    resp = api(leads_token).post(
        "/api/v1/leads", json={"name": "锦程贸易", "phone": "13800138000", "email": "chen@@jc"}
    )
    assert resp.status_code == 201
    assert "email" in resp.json["warnings"] and "已留空" in resp.json["warnings"]["email"][0]
    customer = db.session.get(Customer, resp.json["id"])
    assert customer.email is None and customer.email_key is None and "chen@@jc" in customer.notes


def test_an_unusable_email_alone_is_still_refused(api, leads_token, pool):
    resp = api(leads_token).post("/api/v1/leads", json={"name": "锦程贸易", "email": "chen@@jc"})
    assert resp.status_code == 422 and "email" in resp.json["fields"]
    assert _count(Customer) == 0


# ---------------------------------------------------------------- import


def test_one_file_with_the_same_company_twice_opens_a_conflict(manager_client, pool):
    rows = [
        ["成都天府云图科技有限公司", "王磊", "13800138001", "", "", "", "", ""],
        ["成都天府云图科技有限责任公司", "李娜", "13900139002", "", "", "", "", ""],
        ["上海晨光信息技术有限公司", "张伟", "13700137003", "", "", "", "", ""],
    ]
    _upload(manager_client, _xlsx(rows), pool)
    batch = _batch()
    _preview(manager_client, batch)
    manager_client.post(f"/intake/imports/{batch.id}/run")
    db.session.expire_all()
    ids = {c.name: c.id for c in db.session.scalars(select(Customer))}
    assert len(ids) == 3
    conflicts = db.session.execute(
        select(DuplicateConflict.customer_id, DuplicateConflict.candidate_id)
    ).all()
    assert conflicts == [(ids["成都天府云图科技有限责任公司"], ids["成都天府云图科技有限公司"])]


def test_an_import_row_with_an_unusable_email_is_imported_and_the_report_says_so(manager_client, pool):
    rows = [["宁波锦程贸易有限公司", "陈静", "13800138000", "chen@", "", "", "", ""]]
    _upload(manager_client, _xlsx(rows), pool)
    batch = _batch()
    page = _preview(manager_client, batch)
    assert "已留空" in page.text
    manager_client.post(f"/intake/imports/{batch.id}/run")
    db.session.expire_all()
    batch = _batch()
    assert (batch.rows_created, batch.rows_error) == (1, 0)
    assert [e["column"] for e in batch.errors if e.get("warning")] == ["邮箱"]
    customer = db.session.scalar(select(Customer))
    assert customer.email is None and "chen@" in customer.notes
    errors_file = manager_client.get(f"/intake/imports/{batch.id}/errors.csv")
    assert "宁波锦程贸易有限公司" not in errors_file.data.decode("utf-8-sig")


# ---------------------------------------------------------------- stored keys


def test_recompute_rewrites_old_keys_and_grams(make, pool):
    customer = make.customer(pool, name="騰訊雲端有限公司", email="mailto:a@b.cn")
    contact = make.contact(customer, email="\u200bLi@b.cn")
    # Keys as the old rules stored them.
    db.session.execute(
        text(
            "UPDATE customers SET name_key = '騰訊雲端', email = 'mailto:a@b.cn', email_key = 'mailto:a@b.cn' WHERE id = :i"
        ),
        {"i": customer.id},
    )
    db.session.execute(text("UPDATE contacts SET email_key = 'x' WHERE id = :i"), {"i": contact.id})
    db.session.execute(text("DELETE FROM name_grams WHERE customer_id = :i"), {"i": customer.id})
    db.session.commit()
    assert recompute_keys(db.session) == 2
    db.session.commit()
    db.session.expire_all()
    customer = db.session.get(Customer, customer.id)
    assert (customer.name_key, customer.email, customer.email_key) == ("腾讯云端", "a@b.cn", "a@b.cn")
    assert db.session.get(Contact, contact.id).email_key == "li@b.cn"
    grams = set(db.session.scalars(select(NameGram.gram).where(NameGram.customer_id == customer.id)))
    assert grams == {"腾讯", "讯云", "云端"}
    assert recompute_keys(db.session) == 0  # idempotent


def test_the_customer_edit_form_stores_a_messy_email_clean_and_refuses_letters_in_phones(
    rep_client, make, rep
):
    customer = make.customer(make.pool(), owner=rep, name="騰訊雲端有限公司")
    assert customer.name_key == "腾讯云端"
    resp = rep_client.post(
        f"/customers/{customer.id}/edit",
        data={"name": "騰訊雲端有限公司", "kind": "company", "email": "mailto:张三 <Boss@Example.COM>"},
    )
    assert resp.status_code == 303
    db.session.expire_all()
    fresh = db.session.get(Customer, customer.id)
    assert (fresh.email, fresh.email_key) == ("Boss@Example.COM", "boss@example.com")
    resp = rep_client.post(
        f"/customers/{customer.id}/edit", data={"name": "騰訊", "kind": "company", "phone": "138 0013 80OO"}
    )
    assert resp.status_code == 422 and "不能有字母" in resp.get_data(as_text=True)
