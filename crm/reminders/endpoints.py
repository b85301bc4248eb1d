"""Robot and webhook endpoints (WebhookEndpoint) that admins configure, per team or for everyone."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from crm.models import Team, User, WebhookEndpoint
from crm.reminders import channels
from crm.reminders.services import ReminderError
from crm.settings import store


def allow_local_http() -> bool:
    """Development and tests may point webhooks at http://127.0.0.1 (``WEBHOOK_ALLOW_LOCAL_HTTP``)."""
    return bool(current_app.config.get("WEBHOOK_ALLOW_LOCAL_HTTP"))


def save_endpoint(
    session: Session,
    admin: User,
    now: datetime,
    *,
    endpoint: WebhookEndpoint | None = None,
    kind: str,
    name: str,
    url: str,
    secret: str | None,
    team_id: int | None,
    enabled: bool,
) -> WebhookEndpoint:
    """Create or update an endpoint after validating its URL (https; the robot's own host). Audited;
    the secret is never written to the audit. A blank secret on edit keeps the old one."""
    if not (url or "").strip() and endpoint is not None:
        url = endpoint.url  # a blank URL on edit keeps the stored one (its token is never shown again)
    try:
        url = channels.validate_webhook_url(kind, url, allow_local_http=allow_local_http())
    except ValueError as exc:
        raise ReminderError(str(exc), "url") from exc
    name = (name or "").strip()
    if not name:
        raise ReminderError(_("请填写名称。"), "name")
    if team_id is not None and session.get(Team, team_id) is None:
        raise ReminderError(_("找不到该团队。"), "team_id")
    secret = (secret or "").strip() or None
    if kind == "dingtalk" and secret and not secret.startswith("SEC"):
        raise ReminderError(_("钉钉加签密钥以 SEC 开头,请从机器人安全设置中复制。"), "secret")
    before = _public(endpoint) if endpoint else None
    if endpoint is None:
        endpoint = WebhookEndpoint(created_at=now, extra={})
        session.add(endpoint)
    endpoint.kind, endpoint.name, endpoint.url = kind, name[:60], url
    endpoint.team_id, endpoint.enabled = team_id, bool(enabled)
    if secret is not None:
        endpoint.secret = secret
    session.flush()
    store.audit(session, "webhooks", admin, now, before, _public(endpoint),
                _("保存了通知渠道 %(name)s", name=endpoint.name), object_id=endpoint.id)  # fmt: skip
    return endpoint


def delete_endpoint(session: Session, admin: User, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Remove an endpoint; its pending deliveries are skipped at send time (channel no longer set up)."""
    store.audit(session, "webhooks", admin, now, _public(endpoint), None,
                _("删除了通知渠道 %(name)s", name=endpoint.name), object_id=endpoint.id)  # fmt: skip
    session.delete(endpoint)
    session.flush()


def _public(endpoint: WebhookEndpoint) -> dict:
    """What the audit may keep: no secret, and the URL's token cut off."""
    return {
        "kind": endpoint.kind,
        "name": endpoint.name,
        "url": masked_url(endpoint.url),
        "team_id": endpoint.team_id,
        "enabled": endpoint.enabled,
        "signed": bool(endpoint.secret),
    }


def masked_url(url: str) -> str:
    """The URL with its access token / key shown as the first 4 characters only."""
    if "?" not in url:
        return url
    base, query = url.split("?", 1)
    parts = []
    for pair in query.split("&"):
        key, _sep, value = pair.partition("=")
        parts.append(f"{key}={value[:4]}…" if value and len(value) > 4 else pair)
    return base + "?" + "&".join(parts)
