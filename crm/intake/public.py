"""Public web forms (/f/<slug>): embeddable lead forms for a pool / campaign.

CSRF: these forms are meant to live in an ``<iframe>`` on a third-party site. Browsers do not send (or
partition) our session cookie in a cross-site iframe (SameSite=Lax, third-party cookie blocking), so
Flask-WTF's session-bound CSRF token cannot work there — and an anonymous form has no session worth
protecting anyway. Instead each rendered form carries a **signed form token** (itsdangerous, keyed by the
app's SECRET_KEY): it names the form and the instant it was rendered. A post must bring a valid token for
that form, not older than ``TOKEN_MAX_AGE`` (no replay of week-old tokens) and not younger than
``CRM_FORM_MIN_SECONDS`` (people take a few seconds; scripts do not), and each token is good for **one**
post: the hash of its random nonce is stored when it is spent (``UsedFormToken``, in the database, the
same transaction-safe store whatever Redis is doing), so a second post of it is refused. Together with the honeypot field
(hidden from people; bots fill it and get a thank-you page while nothing is created) and a rate limit
per client address (``RateLimitHit`` rows over a sliding window, settings → intake), that keeps blind
scripted posting out without cookies.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from html import escape

from flask import current_app
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm.auth.services import sha256
from crm.intake import config
from crm.models import LeadForm, Pool, RateLimitHit, UsedFormToken, User
from crm.permissions import is_pool_admin

TOKEN_MAX_AGE = timedelta(hours=24)
KEEP_HITS = timedelta(days=2)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="crm.lead-form")


def form_token(form: LeadForm, now: datetime) -> str:
    return _serializer().dumps({"f": form.id, "t": int(now.timestamp()), "n": secrets.token_urlsafe(16)})


def check_token(form: LeadForm, token: str | None, now: datetime) -> str | None:
    """None when the token is good; else ``expired`` / ``too_fast`` / ``invalid``."""
    try:
        data = _serializer().loads(token or "")
    except BadSignature:
        return "invalid"
    if not isinstance(data, dict) or data.get("f") != form.id or not isinstance(data.get("t"), int):
        return "invalid"
    age = now.timestamp() - data["t"]
    if age > TOKEN_MAX_AGE.total_seconds():
        return "expired"
    if age < current_app.config.get("CRM_FORM_MIN_SECONDS", 2):
        return "too_fast"
    if not isinstance(data.get("n"), str) or not data["n"]:
        return "invalid"
    return None


def spend_token(session: Session, form: LeadForm, token: str, now: datetime) -> bool:
    """Mark a good token (``check_token`` said None) used; False when it was used before. Commits.

    The nonce's hash is the primary key, so of two posts racing with one token exactly one wins."""
    nonce = _serializer().loads(token)["n"]
    session.add(UsedFormToken(nonce_hash=sha256(f"{form.id}:{nonce}"), form_id=form.id, used_at=now))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def rate_limited(session: Session, address: str, now: datetime) -> bool:
    """Record this submission and say whether the address is over its limit (the hit counts either way)."""
    cfg = config.get(session)
    key = f"form:{address}"[:120]
    since = now - timedelta(minutes=cfg["form_rate_window_minutes"])
    recent = session.scalar(
        select(func.count()).select_from(RateLimitHit).where(RateLimitHit.key == key, RateLimitHit.at > since)
    )
    session.add(RateLimitHit(key=key, at=now))
    session.commit()
    return (recent or 0) >= cfg["form_rate_limit"]


def note_hit(session: Session, address: str, now: datetime, detail: str) -> None:
    """Mark the latest hit of an address (honeypot, bad token) so admins can see what was refused."""
    hit = session.scalar(
        select(RateLimitHit)
        .where(RateLimitHit.key == f"form:{address}"[:120])
        .order_by(RateLimitHit.id.desc())
        .limit(1)
    )
    if hit is not None:
        hit.detail = detail
        session.commit()


def purge_hits(session: Session, now: datetime) -> int:
    """Drop hits older than any window, and used tokens that have expired anyway (nightly)."""
    session.execute(
        delete(UsedFormToken).where(UsedFormToken.used_at < now - TOKEN_MAX_AGE - timedelta(hours=1))
    )
    return session.execute(delete(RateLimitHit).where(RateLimitHit.at < now - KEEP_HITS)).rowcount


# ---------------------------------------------------------------- administration


class FormError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def save_form(session: Session, form: LeadForm | None, data: dict, actor: User, now: datetime) -> LeadForm:
    """Create or edit a lead form; the slug is unique. Does not commit."""
    pool = session.get(Pool, data["pool_id"]) if data.get("pool_id") else None
    if pool is None or pool.deleted_at is not None:
        raise FormError("pool_id", _("请选择公海池。"))
    if not is_pool_admin(session, actor, pool):
        raise FormError("pool_id", _("你不是该公海池的管理员。"))
    slug = data["slug"].strip().lower()
    clash = session.scalar(select(LeadForm.id).where(LeadForm.slug == slug))
    if clash and (form is None or clash != form.id):
        raise FormError("slug", _("该网址标识已被其他表单使用。"))
    if form is None:
        form = LeadForm(created_at=now, created_by_id=actor.id)
        session.add(form)
    form.slug = slug
    form.name = data["name"].strip()
    form.pool_id = pool.id
    form.channel = (data.get("channel") or "").strip() or None
    form.campaign = (data.get("campaign") or "").strip() or None
    form.intro = (data.get("intro") or "").strip() or None
    form.thank_you = data["thank_you"].strip()
    form.fields = list(data.get("fields") or [])
    form.enabled = bool(data.get("enabled"))
    session.flush()
    return form


def embed_snippet(form: LeadForm, url: str) -> str:
    """The HTML an admin pastes into a website: an iframe, plus a line that passes the page's utm_* query
    parameters on to the form."""
    slug = escape(form.slug)
    return (
        f'<iframe id="crm-form-{slug}" src="{escape(url)}" title="{escape(form.name)}" '
        'style="width:100%;max-width:480px;height:640px;border:0" loading="lazy"></iframe>\n'
        '<script>(function(f){var q=location.search;if(q){f.src+=(f.src.indexOf("?")<0?"?":"&")+q.slice(1);}})'
        f'(document.getElementById("crm-form-{slug}"));</script>'
    )


def suggest_slug(session: Session) -> str:
    while True:
        slug = "lead-" + secrets.token_hex(3)
        if not session.scalar(select(LeadForm.id).where(LeadForm.slug == slug)):
            return slug
