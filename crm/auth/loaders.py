"""Flask-Login loaders: the session cookie for pages, bearer tokens for ``/api/v1``."""

from __future__ import annotations

from flask import g, request
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager

from crm import clock
from crm.extensions import db
from crm.models import User


def install_loaders(login_manager: LoginManager) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("请先登录。")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(key: str) -> User | None:
        # The API authenticates by bearer token only: a browser cookie must not reach it (no CSRF there).
        if request.path.startswith("/api/"):
            return None
        from crm.auth import sessions

        # The key of a live sign-in (crm.auth.sessions): signed out, password changed, deactivated or
        # expired → signed out on this request.
        found = sessions.user_for_key(db.session, key, clock.now())
        if found is None:
            return None
        g.auth_session = found[1]
        return found[0]

    @login_manager.request_loader
    def load_user_from_token(req) -> User | None:
        if not req.path.startswith("/api/"):
            return None
        header = req.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        from crm.auth.services import token_user

        found = token_user(db.session, header[7:].strip(), clock.now())
        if found is None:
            return None
        g.api_token = found[1]
        return found[0]
