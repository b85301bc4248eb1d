"""Accounts: sign-in with throttling, users, passwords and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session, joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from crm.models import ApiToken, Level, LoginAttempt, Role, Team, User

TOKEN_PREFIX = "ghcrm_"
SCOPES = {
    "read": _l("读取客户、公海与工作台"),
    "write": _l("领取、退回、跟进等操作"),
    "leads": _l("仅提交线索和行为事件 (网站集成)"),
    "admin": _l("管理公海、用户与设置 (需管理员)"),
}
DEFAULT_SCOPES = "read write"


class AccountError(ValueError):
    """A refusal to show the user as is (already translated); ``field`` names the form field it is about."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def hash_password(password: str) -> str:
    method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
    return generate_password_hash(password, method=method)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SignIn:
    user: User | None
    error: str | None = None


def _recent_failures(session: Session, column, value: str, since: datetime) -> int:
    return session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(column == value, LoginAttempt.success.is_(False), LoginAttempt.at >= since)
    )


def throttle_wait(session: Session, email: str, ip: str, now: datetime) -> int:
    """Minutes to wait before another attempt for this account or address (0 = may try)."""
    cfg = current_app.config
    window = timedelta(minutes=cfg["LOGIN_THROTTLE_WINDOW_MINUTES"])
    since = now - window
    limit = cfg["LOGIN_THROTTLE_MAX_FAILURES"]
    if (
        _recent_failures(session, LoginAttempt.email, email, since) < limit
        and _recent_failures(session, LoginAttempt.ip, ip, since) < limit
    ):
        return 0
    oldest = session.scalar(
        select(func.min(LoginAttempt.at)).where(
            or_(LoginAttempt.email == email, LoginAttempt.ip == ip),
            LoginAttempt.success.is_(False),
            LoginAttempt.at >= since,
        )
    )
    remaining = (oldest + window - now).total_seconds() if oldest else window.total_seconds()
    return max(1, int(remaining // 60) + (1 if remaining % 60 else 0))


def authenticate(session: Session, email: str, password: str, ip: str, now: datetime) -> SignIn:
    """Check a sign-in; records the attempt. Refuses while throttled without checking the password."""
    email = (email or "").strip().lower()
    wait = throttle_wait(session, email, ip, now)
    if wait:
        return SignIn(None, _("登录失败次数过多,请 %(minutes)s 分钟后再试。", minutes=wait))
    user = session.scalar(select(User).where(User.email == email))
    ok = user is not None and check_password_hash(user.password_hash, password or "")
    error = None
    if not ok:
        error = _("邮箱或密码不正确。")
    elif not user.active:
        error = _("该账号已停用,请联系管理员。")
    session.add(LoginAttempt(email=email, ip=ip, at=now, success=error is None, detail=error))
    session.commit()
    return SignIn(user if error is None else None, error)


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    password: str,
    role: str = Role.REP,
    level: Level | None = None,
    team: Team | None = None,
    manager: User | None = None,
    now: datetime,
) -> User:
    """Create an active user; raises ``AccountError`` when the email is taken or the role unknown."""
    email = email.strip().lower()
    if role not in Role.ALL:
        raise AccountError(_("未知角色: %(role)s", role=role))
    if len(password) < 8:
        raise AccountError(_("密码至少 8 位。"))
    if session.scalar(select(User.id).where(User.email == email)):
        raise AccountError(_("邮箱 %(email)s 已被使用。", email=email))
    user = User(
        email=email,
        name=name.strip(),
        password_hash=hash_password(password),
        role=role,
        level=level,
        team=team,
        manager=manager,
        active=True,
        regions=[],
        skills=[],
        notify_prefs={},
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str, now: datetime | None = None) -> None:
    """Set a new password; every sign-in of the user ends (remember-me cookies too). Does not commit."""
    from crm import clock
    from crm.auth import sessions

    if len(password) < 8:
        raise AccountError(_("密码至少 8 位。"))
    user.password_hash = hash_password(password)
    user.session_version = (user.session_version or 1) + 1
    sessions.end_all(session, user, now or clock.now())


def manager_of(user: User) -> User | None:
    """The user's manager: the explicit one, else the team's manager (never the user themself)."""
    if user.manager is not None and user.manager.id != user.id:
        return user.manager
    if user.team is not None and user.team.manager is not None and user.team.manager.id != user.id:
        return user.team.manager
    return None


def create_token(session: Session, user: User, name: str, now: datetime, scopes: str = DEFAULT_SCOPES) -> str:
    """Create an API token and return it in clear, once; only its hash is stored."""
    wanted = scopes.split()
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise AccountError(_("未知权限范围: %(scopes)s", scopes=" ".join(unknown) or "(空)"))
    if "admin" in wanted and not user.is_admin:
        raise AccountError(_("只有管理员可以创建带 admin 权限的令牌。"))
    if not name.strip():
        raise AccountError(_("请填写令牌名称。"))
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user=user,
            name=name.strip()[:60],
            token_hash=sha256(plain),
            prefix=plain[: len(TOKEN_PREFIX) + 4],
            scopes=" ".join(wanted),
            created_at=now,
        )
    )
    session.flush()
    return plain


# The user in the same statement (every API request asks for both); built once, not per request.
_TOKEN_WITH_USER = (
    select(ApiToken).options(joinedload(ApiToken.user)).where(ApiToken.token_hash == bindparam("token_hash"))
)


def token_user(session: Session, plain: str, now: datetime) -> tuple[User, ApiToken] | None:
    """The active user behind a bearer token, or None for unknown, revoked or deactivated."""
    token = session.scalar(_TOKEN_WITH_USER, {"token_hash": sha256(plain)})
    if token is None or token.revoked_at is not None or not token.user.active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
        token.last_used_at = now  # coarse, to avoid a write per request
        session.commit()
    return token.user, token


def revoke_token(session: Session, user: User, token_id: int, now: datetime) -> bool:
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != user.id and not user.is_admin) or token.revoked_at:
        return False
    token.revoked_at = now
    return True
