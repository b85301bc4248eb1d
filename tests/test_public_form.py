"""Public web forms: signed token instead of a session, honeypot, rate limit, thank-you page, embedding."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import BehaviorEvent, Customer, RateLimitHit

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def app_config(app_config):
    return app_config | {"WTF_CSRF_ENABLED": True}  # the public form must work with CSRF protection on


@pytest.fixture
def form(make, manager):
    pool = make.pool("新线索池", kind="lead", admins=[manager])
    return make.lead_form(
        pool, slug="expo", campaign="2026春季展会", channel="展会官网", fields=["name", "email", "notes"]
    )


def _token(client, slug="expo", query=""):
    page = client.get(f"/f/{slug}{query}")
    assert page.status_code == 200
    return page, re.search(r'name="token" value="([^"]+)"', page.text).group(1)


def _submit(client, token, **fields):
    data = {"token": token, "contact_name": "钱先生", "phone": "13812345678", "name": "嘉兴瑞丰纺织有限公司",
            "email": "qian@rf.cn", "notes": "想了解价格", "website": ""} | fields  # fmt: skip
    return client.post("/f/expo", data=data)


def test_a_visitor_leaves_a_lead_and_sees_the_thank_you_page(client, form):
    with clock.frozen(T0):
        page, token = _token(client, query="?utm_source=baidu&utm_campaign=spring")
    assert "X-Frame-Options" not in page.headers  # embeddable in an iframe
    assert "csrf_token" not in page.text and "Set-Cookie" not in page.headers  # no session needed
    with clock.frozen(T0 + timedelta(seconds=20)):
        hidden = dict(re.findall(r'name="(utm_\w+)" type="hidden" value="([^"]*)"', page.text))
        resp = _submit(client, token, **hidden)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/f/expo/thanks")
    customer = db.session.scalar(select(Customer))
    assert (customer.source, customer.channel, customer.campaign) == ("form", "展会官网", "2026春季展会")
    assert customer.utm == {"utm_source": "baidu", "utm_campaign": "spring"}
    assert customer.pool_id == form.pool_id and customer.owner_id is None
    assert db.session.scalar(select(BehaviorEvent.type)) == "form_submit"
    thanks = client.get("/f/expo/thanks")
    assert thanks.status_code == 200 and form.thank_you in thanks.text


def test_the_honeypot_pretends_success_and_creates_nothing(client, form):
    with clock.frozen(T0):
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(seconds=20)):
        resp = _submit(client, token, website="http://spam.example")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/thanks")
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    assert db.session.scalar(select(RateLimitHit.detail)) == "honeypot"


def test_an_address_over_the_rate_limit_gets_429(client, form):
    with clock.frozen(T0):
        tokens = [_token(client)[1] for _ in range(7)]  # each token is good for one post
    statuses = []
    for i, token in enumerate(tokens):
        with clock.frozen(T0 + timedelta(seconds=20 + i)):
            statuses.append(_submit(client, token, phone=f"1381234{i:04d}", email=f"q{i}@rf.cn").status_code)
    assert statuses == [303] * 5 + [429, 429]
    # Five leads arrived (one company, so four are possible duplicates of the first); the rest were refused.
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 5
    with clock.frozen(T0 + timedelta(minutes=11)):  # the window has passed
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(minutes=12)):
        assert _submit(client, token, phone="13812340099", email="q99@rf.cn").status_code == 303


def test_a_post_without_a_valid_token_is_refused(client, form):
    with clock.frozen(T0):
        resp = _submit(client, "forged")
    assert resp.status_code == 422 and "页面已过期" in resp.text
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_token_for_another_form_or_too_old_is_refused(client, form, make):
    other = make.lead_form(db.session.get(type(form).pool.property.mapper.class_, form.pool_id), slug="other")
    with clock.frozen(T0):
        _page, other_token = _token(client, "other")
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(seconds=20)):
        assert _submit(client, other_token).status_code == 422
    with clock.frozen(T0 + timedelta(days=2)):
        assert _submit(client, token).status_code == 422
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    assert other.slug == "other"


def test_an_instant_submission_is_asked_to_try_again(client, form):
    with clock.frozen(T0):
        _page, token = _token(client)
        resp = _submit(client, token)
    assert resp.status_code == 422 and "提交得太快" in resp.text


def test_missing_fields_and_a_bad_phone_are_shown_in_place(client, form):
    with clock.frozen(T0):
        token, second = _token(client)[1], _token(client)[1]
    with clock.frozen(T0 + timedelta(seconds=20)):
        empty = _submit(client, token, contact_name="", phone="")
        bad = _submit(client, second, phone="62888888")
    assert empty.status_code == 422 and "请填写您的姓名" in empty.text and "请填写手机号码" in empty.text
    assert bad.status_code == 422 and "座机号码请带区号" in bad.text
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_repeat_visitor_is_attached_to_the_existing_customer(client, form, make, rep):
    existing = make.customer(db.session.get(type(form).pool.property.mapper.class_, form.pool_id), owner=rep,
                             phone="13812345678")  # fmt: skip
    with clock.frozen(T0):
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(seconds=20)):
        assert _submit(client, token).status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    assert db.session.scalar(select(BehaviorEvent.customer_id)) == existing.id  # counts as interest


def test_disabled_or_unknown_forms_are_404(client, form):
    form.enabled = False
    db.session.commit()
    assert client.get("/f/expo").status_code == 404
    assert client.get("/f/nope").status_code == 404


def test_a_token_is_good_for_one_post_only(client, form):
    """Issue 18 #13: one signed token was accepted for four posts in a row."""
    with clock.frozen(T0):
        _page, token = _token(client)
    statuses = []
    for i in range(4):
        with clock.frozen(T0 + timedelta(seconds=20 + i)):
            resp = _submit(client, token, phone=f"1391234{i:04d}", name=f"公司{i}", email=f"r{i}@rf.cn")
            statuses.append(resp.status_code)
    assert statuses == [303, 409, 409, 409]
    assert "这份表单已经提交过了,请勿重复提交。" in resp.text
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    # The refusal page carries a fresh token that works.
    fresh = re.search(r'name="token" value="([^"]+)"', resp.text).group(1)
    with clock.frozen(T0 + timedelta(seconds=40)):
        assert _submit(client, fresh, phone="13900001111", name="新公司").status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


def test_a_post_that_fails_validation_spends_its_token_and_hands_out_a_new_one(client, form):
    with clock.frozen(T0):
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(seconds=20)):
        bad = _submit(client, token, phone="")
        assert bad.status_code == 422
        again = _submit(client, token)
        assert again.status_code == 409
    fresh = re.search(r'name="token" value="([^"]+)"', bad.text).group(1)
    with clock.frozen(T0 + timedelta(seconds=40)):
        assert fresh != token and _submit(client, fresh).status_code == 303


def test_used_tokens_are_purged_after_they_expire_anyway(app, client, form):
    from crm.intake import public
    from crm.models import UsedFormToken

    with clock.frozen(T0):
        _page, token = _token(client)
    with clock.frozen(T0 + timedelta(seconds=20)):
        assert _submit(client, token).status_code == 303
    assert db.session.scalar(select(func.count()).select_from(UsedFormToken)) == 1
    public.purge_hits(db.session, T0 + timedelta(hours=12))
    assert db.session.scalar(select(func.count()).select_from(UsedFormToken)) == 1
    public.purge_hits(db.session, T0 + public.TOKEN_MAX_AGE + timedelta(hours=2))
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(UsedFormToken)) == 0
