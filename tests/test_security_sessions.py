"""Sign-ins as revocable server-side rows (issue 18, items 1 and 4): logout really logs out, a password
change ends the other sign-ins and keeps this one (without Flask-Login recursing into its own proxy),
remember-me keys are random per sign-in, stored hashed, revoked and bounded in time."""

from __future__ import annotations

from datetime import timedelta

from flask import g
from sqlalchemy import select

from crm import clock
from crm.auth import services as auth_services
from crm.auth import sessions
from crm.extensions import db
from crm.models import User, UserSession
from crm.reminders import ics
from tests.factories import PASSWORD

NEW_PASSWORD = "another-pass-123"


def _sign_in(client, user, password=PASSWORD, remember=False, headers=None):
    data = {"email": user.email, "password": password}
    if remember:
        data["remember"] = "y"
    resp = client.post("/login", data=data, headers=headers or {})
    assert resp.status_code in (200, 303), resp.status_code
    return resp


def _signed_in(client) -> bool:
    resp = client.get("/profile")
    if resp.status_code == 200:
        return True
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    return False


def _copy_cookie(source, target, name):
    cookie = source.get_cookie(name)
    assert cookie is not None, name
    target.set_cookie(name, cookie.value)


def _change_password(client, current=PASSWORD, new=NEW_PASSWORD, **kwargs):
    return client.post(
        "/profile/password",
        data={"pw-current": current, "pw-password": new, "pw-confirm": new},
        **kwargs,
    )


# ---------------------------------------------------------------- 1. password change


def test_password_change_keeps_this_sign_in_without_recursing_into_the_proxy(app, rep):
    client = app.test_client()
    _sign_in(client, rep)
    with app.test_client() as probe:  # keeps the request context: what did login_user get?
        _copy_cookie(client, probe, "session")
        resp = _change_password(probe)
        assert resp.status_code == 303 and resp.headers["Location"] == "/profile"
        assert type(g._login_user) is User  # the user itself, never the LocalProxy that recursed
    page = probe.get("/profile")
    assert page.status_code == 200 and "密码已修改,其他设备上的登录已全部退出。" in page.get_data(
        as_text=True
    )
    db.session.expire_all()
    assert auth_services.check_password_hash(db.session.get(User, rep.id).password_hash, NEW_PASSWORD)


def test_password_change_over_htmx_redirects_the_page(app, rep):
    client = app.test_client()
    _sign_in(client, rep)
    resp = _change_password(client, headers={"HX-Request": "true"})
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == "/profile"
    assert _signed_in(client)


def test_password_change_ends_every_other_sign_in_and_remember_cookie(app, rep):
    here, laptop, phone = app.test_client(), app.test_client(), app.test_client()
    _sign_in(here, rep, remember=True)
    _sign_in(laptop, rep)
    _sign_in(phone, rep, remember=True)
    remembered = app.test_client()
    _copy_cookie(phone, remembered, "remember_token")
    assert _signed_in(laptop) and _signed_in(remembered)

    assert _change_password(here).status_code == 303

    assert not _signed_in(laptop)
    assert not _signed_in(phone)
    assert not _signed_in(remembered)
    # This browser goes on, under a new key, and still remembered.
    assert _signed_in(here)
    fresh = app.test_client()
    _copy_cookie(here, fresh, "remember_token")
    assert _signed_in(fresh)
    live = db.session.scalars(select(UserSession).where(UserSession.revoked_at.is_(None))).all()
    assert [(r.user_id, r.remember) for r in live] == [(rep.id, True)]


def test_wrong_current_password_changes_nothing(app, rep):
    client, other = app.test_client(), app.test_client()
    _sign_in(client, rep)
    _sign_in(other, rep)
    resp = _change_password(client, current="not-my-password")
    assert resp.status_code == 422 and "当前密码不正确。" in resp.get_data(as_text=True)
    assert _signed_in(client) and _signed_in(other)


def test_admin_password_reset_and_deactivation_end_all_sign_ins(app, rep, admin, admin_client):
    first, second = app.test_client(), app.test_client()
    _sign_in(first, rep, remember=True)
    resp = admin_client.post(f"/admin/users/{rep.id}/password", data={"reset-password": NEW_PASSWORD})
    assert resp.status_code == 302
    assert not _signed_in(first)

    _sign_in(second, rep, password=NEW_PASSWORD, remember=True)
    remembered = app.test_client()
    _copy_cookie(second, remembered, "remember_token")
    assert admin_client.post(f"/admin/users/{rep.id}/active", data={"active": "0"}).status_code in (302, 303)
    assert not _signed_in(second) and not _signed_in(remembered)
    # Reactivated: the old sign-ins stay ended.
    assert admin_client.post(f"/admin/users/{rep.id}/active", data={"active": "1"}).status_code in (302, 303)
    assert not _signed_in(second)


# ---------------------------------------------------------------- 4. logout, remember-me


def test_logout_ends_the_sign_in_for_a_copied_session_cookie(app, rep):
    client, thief = app.test_client(), app.test_client()
    _sign_in(client, rep)
    _copy_cookie(client, thief, "session")
    assert _signed_in(thief)
    assert client.post("/logout").status_code == 302
    assert not _signed_in(client)
    assert not _signed_in(thief)


def test_logout_ends_only_that_sign_in(app, rep):
    phone, laptop = app.test_client(), app.test_client()
    _sign_in(phone, rep)
    _sign_in(laptop, rep)
    phone.post("/logout")
    assert not _signed_in(phone) and _signed_in(laptop)


def test_remember_token_is_random_per_sign_in_hashed_and_revoked_on_logout(app, rep):
    tokens = []
    for _ in range(2):
        client = app.test_client()
        _sign_in(client, rep, remember=True)
        cookie = client.get_cookie("remember_token")
        tokens.append(cookie.value)
        # Bounded lifetime: about 30 days, not Flask-Login's default 365.
        days = (cookie.expires - clock.now()).days if cookie.expires else None
        assert days is not None and 28 <= days <= 30
    assert tokens[0] != tokens[1]
    keys = [t.split("|")[0] for t in tokens]
    stored = set(db.session.scalars(select(UserSession.key_hash)))
    assert not any(k in stored for k in keys)  # only hashes are stored
    assert {auth_services.sha256(k) for k in keys} <= stored

    remembered = app.test_client()
    remembered.set_cookie("remember_token", tokens[1])
    assert _signed_in(remembered)
    client.post("/logout")
    after = app.test_client()
    after.set_cookie("remember_token", tokens[1])
    assert not _signed_in(after)


def test_forged_or_old_style_remember_cookie_does_not_sign_in(app, rep):
    for value in (f"{rep.id}:1", f"{rep.id}", "x" * 500):
        client = app.test_client()
        with client.session_transaction() as sess:
            sess["_user_id"] = value
        assert not _signed_in(client)


def test_a_sign_in_ends_after_its_lifetime(app, rep):
    client = app.test_client()
    _sign_in(client, rep, remember=True)
    remembered = app.test_client()
    _copy_cookie(client, remembered, "remember_token")
    later = clock.now() + timedelta(days=app.config["CRM_SESSION_DAYS"], minutes=1)
    with clock.frozen(later):
        assert not _signed_in(client)
        assert not _signed_in(remembered)


def test_api_tokens_and_calendar_feed_outlive_a_password_change(app, rep, api):
    token = auth_services.create_token(db.session, rep, "集成", clock.now())
    feed = ics.rotate_token(db.session, rep)
    db.session.commit()
    client = app.test_client()
    _sign_in(client, rep)
    assert _change_password(client).status_code == 303
    client.post("/logout")
    assert api(token).get("/api/v1/me").status_code == 200
    assert app.test_client().get(f"/calendar/{feed}.ics").status_code == 200
    # A browser session never reaches the API (bearer tokens only), signed in or not.
    _sign_in(client, rep, password=NEW_PASSWORD)
    assert client.get("/api/v1/me").status_code == 401


def test_sessions_purge_drops_ended_rows(app, rep):
    now = clock.now()
    live = sessions.start(db.session, rep, now)
    ended = sessions.start(db.session, rep, now - timedelta(days=3))
    sessions.revoke(db.session, ended, now - timedelta(days=2))
    db.session.commit()
    assert sessions.purge(db.session, now) == 1
    db.session.commit()
    assert sessions.user_for_key(db.session, live, now)[0].id == rep.id


def test_deactivation_through_the_api_ends_the_users_sign_ins(app, rep, admin, api):
    client = app.test_client()
    _sign_in(client, rep, remember=True)
    token = auth_services.create_token(db.session, admin, "管理", clock.now(), "read write admin")
    db.session.commit()
    resp = api(token).patch(f"/api/v1/users/{rep.id}", json={"active": False})
    assert resp.status_code == 200, resp.get_json()
    assert not _signed_in(client)
