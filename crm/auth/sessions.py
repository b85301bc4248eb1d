"""Web sign-ins as revocable server-side rows (``UserSession``).

Each sign-in gets a random key (``secrets.token_urlsafe``). Flask-Login keeps it as the session's
``_user_id`` and, with "记住我", in its signed remember-me cookie; the database keeps only its SHA-256. A key
loads its user only while its row is neither revoked nor expired and the user is active, so:

- signing out revokes that sign-in: a copied session or remember-me cookie stops working at once;
- a password change or deactivation revokes all of the user's sign-ins (the password change then signs the
  current browser in again under a new key);
- every sign-in ends ``CRM_SESSION_DAYS`` after it began (the remember-me cookie lives as long).

API bearer tokens and calendar (ICS) feed tokens are separate credentials and are not touched here.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from flask import current_app, g, request
from flask import session as cookie_session
from flask_login import login_user, logout_user
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session, joinedload

from crm.auth.services import sha256
from crm.models import User, UserSession

# Last-seen is refreshed at most this often (a write per request would be wasteful).
TOUCH_EVERY = timedelta(minutes=5)

_BY_KEY = (
    select(UserSession)
    .options(joinedload(UserSession.user))
    .where(UserSession.key_hash == bindparam("key_hash"))
)


def lifetime() -> timedelta:
    return timedelta(days=current_app.config["CRM_SESSION_DAYS"])


def start(
    session: Session,
    user: User,
    now: datetime,
    *,
    remember: bool = False,
    ip: str | None = None,
    user_agent: str | None = None,
) -> str:
    """Record a new sign-in of ``user`` and return its key in clear (only its hash is stored). Flushes."""
    key = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id,
            key_hash=sha256(key),
            remember=remember,
            created_at=now,
            expires_at=now + lifetime(),
            last_seen_at=now,
            ip=(ip or "")[:64] or None,
            user_agent=(user_agent or "")[:200] or None,
        )
    )
    session.flush()
    return key


def user_for_key(session: Session, key: str, now: datetime) -> tuple[User, UserSession] | None:
    """The active user of a live sign-in, with its row; None for unknown, revoked, expired or deactivated."""
    if not key or len(key) > 100:
        return None
    key_hash = sha256(key)
    row = session.scalar(_BY_KEY, {"key_hash": key_hash})
    if row is None or not hmac.compare_digest(row.key_hash, key_hash):
        return None
    if row.revoked_at is not None or row.expires_at <= now or not row.user.active:
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
        session.commit()
    return row.user, row


def revoke(session: Session, key: str | None, now: datetime) -> bool:
    """End one sign-in (sign-out). Does not commit."""
    if not key:
        return False
    result = session.execute(
        update(UserSession)
        .where(UserSession.key_hash == sha256(key), UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


def end_all(session: Session, user: User | int, now: datetime) -> int:
    """End every sign-in of a user (password change, deactivation). Does not commit."""
    user_id = user if isinstance(user, int) else user.id
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount


def purge(session: Session, now: datetime) -> int:
    """Drop sign-ins that ended more than a day ago (nightly). Does not commit."""
    cutoff = now - timedelta(days=1)
    result = session.execute(
        delete(UserSession).where(or_(UserSession.expires_at < cutoff, UserSession.revoked_at < cutoff))
    )
    return result.rowcount


# ---------------------------------------------------------------- in a request (the web sign-in flow)


def current_key() -> str | None:
    """The key of the browser's sign-in (from its session, where Flask-Login keeps it)."""
    key = cookie_session.get("_user_id")
    return key if isinstance(key, str) else None


def current_row() -> UserSession | None:
    """The ``UserSession`` row the current request was loaded with (set by the user loader)."""
    return g.get("auth_session")


def sign_in(session: Session, user: User, now: datetime, *, remember: bool = False) -> str:
    """Start a sign-in for this browser: a new row, Flask-Login's session pointing at its key, and a
    remember-me cookie carrying the same key when asked. Commits."""
    key = start(
        session,
        user,
        now,
        remember=remember,
        ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
    )
    session.commit()
    login_user(user, remember=remember, duration=lifetime())
    # Flask-Login stored ``user.get_id()``; the session and the remember-me cookie carry the key instead.
    cookie_session["_user_id"] = key
    return key


def sign_out(session: Session, now: datetime) -> None:
    """End this browser's sign-in: the row is revoked (copies of its cookies stop working) and the cookies
    are cleared. Commits."""
    revoke(session, current_key(), now)
    session.commit()
    logout_user()


def restart_after_password_change(session: Session, user: User, now: datetime) -> str:
    """After the user changed their own password: every sign-in ended (by ``set_password``); this browser
    signs in again under a new key, keeping its remember-me choice. Commits."""
    row = current_row()
    remember = bool(row.remember) if row is not None else False
    return sign_in(session, user, now, remember=remember)
