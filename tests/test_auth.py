"""Sign-in, throttling, deactivation, password reset, CSRF and bad input on the account screens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm import clock
from crm.extensions import db
from crm.models import LoginAttempt, Role, User
from tests.conftest import login
from tests.factories import PASSWORD


def _login(client, email, password=PASSWORD, **extra):
    return client.post("/login", data={"email": email, "password": password, **extra})


def test_login_page_renders_in_chinese_by_default(client):
    resp = client.get("/login")
    assert resp.status_code == 200
    assert "登录" in resp.get_data(as_text=True)


def test_correct_password_signs_in_and_lands_on_the_workbench(client, rep):
    resp = _login(client, rep.email)
    assert resp.status_code in (302, 303)
    assert client.get("/").status_code == 200


def test_email_is_case_insensitive(client, rep):
    assert _login(client, rep.email.upper()).status_code in (302, 303)


@pytest.mark.parametrize("email,password", [("nobody@test.cn", "whatever-1"), (None, "wrong-password")])
def test_wrong_password_or_unknown_user_gets_one_clear_message(client, rep, email, password):
    resp = _login(client, email or rep.email, password)
    assert resp.status_code == 422
    assert "邮箱或密码不正确" in resp.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_disabled_user_cannot_sign_in(client, make):
    user = make.user(Role.REP)
    user.active = False
    db.session.commit()
    resp = _login(client, user.email)
    assert resp.status_code == 422
    assert "已停用" in resp.get_data(as_text=True)


def test_five_failures_throttle_the_account_with_a_wait_message(client, rep):
    for _ in range(5):
        assert _login(client, rep.email, "bad-password").status_code == 422
    resp = _login(client, rep.email)  # even the right password is refused while throttled
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "登录失败次数过多" in body and "分钟后再试" in body


def test_throttle_ends_after_fifteen_minutes(client, rep):
    start = clock.now()
    with clock.frozen(start):
        for _ in range(5):
            _login(client, rep.email, "bad-password")
    with clock.frozen(start + timedelta(minutes=16)):
        assert _login(client, rep.email).status_code in (302, 303)


def test_five_failures_from_one_address_throttle_other_accounts_too(client, make):
    users = [make.user() for _ in range(5)]
    for user in users:
        _login(client, user.email, "bad-password")
    other = make.user()
    resp = _login(client, other.email)
    assert resp.status_code == 422
    assert "登录失败次数过多" in resp.get_data(as_text=True)


def test_deactivated_user_is_logged_out_on_next_request(rep_client, rep):
    assert rep_client.get("/").status_code == 200
    rep.active = False
    db.session.commit()
    resp = rep_client.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_password_reset_ends_other_sessions(app, admin_client, rep):
    other = app.test_client()
    login(other, rep)
    assert other.get("/").status_code == 200
    resp = admin_client.post(f"/admin/users/{rep.id}/password", data={"reset-password": "new-password-9"})
    assert resp.status_code in (302, 303)
    assert other.get("/").status_code == 302
    fresh = app.test_client()
    assert _login(fresh, rep.email, "new-password-9").status_code in (302, 303)


def test_over_long_email_is_refused_without_writing(client):
    resp = _login(client, "a" * 300 + "@x.cn")
    assert resp.status_code == 422
    assert "254" in resp.get_data(as_text=True) or "长度" in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(LoginAttempt)) == 0


def test_non_utf8_form_post_gets_a_400(client, rep):
    body = b"email=" + "张".encode("gbk") + b"&password=x"
    resp = client.post("/login", data=body, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400
    assert "UTF-8" in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(LoginAttempt)) == 0


def test_open_redirect_after_login_is_ignored(client, rep):
    resp = client.post("/login?next=https://evil.example/", data={"email": rep.email, "password": PASSWORD})
    assert resp.headers["Location"] in ("/", "http://localhost/")


def test_language_switch_persists_on_the_user(rep_client, rep):
    rep_client.post("/lang/en", data={"next": "/profile"})
    db.session.refresh(rep)
    assert rep.locale == "en"


class TestWithCsrf:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "WTF_CSRF_ENABLED": True}

    def test_post_without_csrf_token_is_refused_and_nothing_is_written(self, client, rep):
        resp = _login(client, rep.email)
        assert resp.status_code == 400
        assert "CSRF" in resp.get_data(as_text=True)
        assert db.session.scalar(select(func.count()).select_from(LoginAttempt)) == 0

    def test_htmx_csrf_header_is_accepted(self, client, rep):
        page = client.get("/login").get_data(as_text=True)
        token = page.split('"X-CSRFToken": "')[1].split('"')[0]
        resp = client.post(
            "/login",
            data={"email": rep.email, "password": PASSWORD},
            headers={"X-CSRFToken": token, "HX-Request": "true"},
        )
        assert resp.status_code == 200
        assert resp.headers["HX-Redirect"]


def test_users_are_stored_with_hashed_passwords(rep):
    stored = db.session.get(User, rep.id).password_hash
    assert PASSWORD not in stored and stored.startswith("pbkdf2:")
