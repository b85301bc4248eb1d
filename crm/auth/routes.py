"""Sign in and out, the profile page (password, language, API tokens)."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import Blueprint, abort, current_app, flash, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from werkzeug.security import check_password_hash

from crm import clock
from crm.access import access
from crm.auth import services, sessions
from crm.auth.forms import LoginForm, PasswordForm, TokenForm
from crm.extensions import db
from crm.htmx import redirect_htmx, render
from crm.models import ApiToken, Role
from crm.urls import safe_next
from crm.web import client_ip

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@access(None)
def login():
    """Sign-in page. Throttled after repeated failures per account and per address."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        now = clock.now()
        result = services.authenticate(db.session, form.email.data, form.password.data, client_ip(), now)
        if result.user is not None:
            if result.user.locale is None and session.get("lang"):
                result.user.locale = session["lang"]
            sessions.sign_in(db.session, result.user, now, remember=form.remember.data)
            return redirect_htmx(safe_next(request.args.get("next")))
        error = result.error
    status = 422 if request.method == "POST" else 200
    return render("auth/login.html", "login_form", status=status, form=form, error=error)


@bp.route("/logout", methods=["POST"])
@access(Role.REP)
def logout():
    """Sign out: this sign-in ends on the server too (copies of its cookies stop working)."""
    sessions.sign_out(db.session, clock.now())
    return redirect(url_for("auth.login"))


@bp.route("/lang/<code>", methods=["POST"])
@access(None)
def set_language(code: str):
    """Switch the interface language; remembered in the session and on the user."""
    if code not in current_app.config["LANGUAGES"]:
        abort(404)
    session["lang"] = code
    if current_user.is_authenticated:
        current_user.locale = code
        db.session.commit()
    return redirect(
        safe_next(request.form.get("next") or request.referrer and urlparse(request.referrer).path)
    )


def _profile_context(**extra):
    tokens = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == current_user.id).order_by(ApiToken.created_at.desc())
    ).all()
    return {
        "tokens": tokens,
        "password_form": PasswordForm(prefix="pw"),
        "token_form": TokenForm(prefix="tk"),
    } | extra


@bp.route("/profile")
@access(Role.REP)
def profile():
    """My profile: password, language, API tokens."""
    return render("auth/profile.html", **_profile_context())


@bp.route("/profile/password", methods=["POST"])
@access(Role.REP)
def change_password():
    """Change my password (asks for the current one). Every other sign-in of mine ends; this one goes on."""
    form = PasswordForm(prefix="pw")
    if form.validate_on_submit():
        me = current_user._get_current_object()  # the User itself: Flask-Login must not get its own proxy
        if not check_password_hash(me.password_hash, form.current.data):
            form.current.errors.append(_("当前密码不正确。"))
        else:
            now = clock.now()
            services.set_password(db.session, me, form.password.data, now)
            db.session.commit()
            sessions.restart_after_password_change(db.session, me, now)
            flash(_("密码已修改,其他设备上的登录已全部退出。"), "success")
            return redirect_htmx(url_for("auth.profile"))
    return render("auth/profile.html", "password_panel", status=422, **_profile_context(password_form=form))


@bp.route("/profile/tokens", methods=["POST"])
@access(Role.REP)
def create_token():
    """Create an API token; it is shown once."""
    form = TokenForm(prefix="tk")
    if form.validate_on_submit():
        try:
            plain = services.create_token(
                db.session, current_user, form.name.data, clock.now(), " ".join(form.scopes.data)
            )
        except services.AccountError as exc:
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            return render("auth/profile.html", "tokens_panel", **_profile_context(new_token=plain))
    return render("auth/profile.html", "tokens_panel", status=422, **_profile_context(token_form=form))


@bp.route("/profile/tokens/<int:token_id>/revoke", methods=["POST"])
@access(Role.REP)
def revoke_token(token_id: int):
    """Revoke one of my API tokens."""
    if not services.revoke_token(db.session, current_user, token_id, clock.now()):
        abort(404)
    db.session.commit()
    return render("auth/profile.html", "tokens_panel", **_profile_context())
