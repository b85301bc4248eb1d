"""User, team and level administration."""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.auth import sessions
from crm.auth.services import AccountError
from crm.models import Level, Role, Team, User


def split_list(text: str | None) -> list[str]:
    """ "华东, 华南,华北" → ["华东", "华南", "华北"] (full-width commas too)."""
    if not text:
        return []
    return [part.strip() for part in text.replace(",", ",").replace("、", ",").split(",") if part.strip()]


def update_user(session: Session, user: User, actor: User, data: dict) -> User:
    """Apply an admin's edit to a user. ``data`` holds the form fields (ids already coerced)."""
    email = data["email"].strip().lower()
    clash = session.scalar(select(User.id).where(User.email == email, User.id != user.id))
    if clash:
        raise AccountError(_("邮箱 %(email)s 已被使用。", email=email), "email")
    if data["role"] not in Role.ALL:
        raise AccountError(_("未知角色。"), "role")
    if user.id == actor.id and data["role"] != Role.ADMIN:
        raise AccountError(_("不能取消自己的管理员角色。"), "role")
    if data.get("manager_id") is not None and data.get("manager_id") == user.id:
        raise AccountError(_("不能把用户设为自己的主管。"), "manager_id")
    user.email = email
    user.name = data["name"].strip()
    user.role = data["role"]
    user.level_id = data.get("level_id")
    user.team_id = data.get("team_id")
    user.manager_id = data.get("manager_id")
    user.phone = (data.get("phone") or "").strip() or None
    user.regions = split_list(data.get("regions"))
    user.skills = split_list(data.get("skills"))
    user.away_until = data.get("away_until")
    return user


def set_active(session: Session, user: User, actor: User, active: bool, now: datetime) -> None:
    """Deactivate (离职) or reactivate. Deactivating ends every sign-in of the user at once."""
    if user.id == actor.id and not active:
        raise AccountError(_("不能停用自己的账号。"))
    user.active = active
    user.deactivated_at = None if active else now
    user.session_version = (user.session_version or 1) + 1
    if not active:
        sessions.end_all(session, user, now)


def save_team(
    session: Session, team: Team | None, name: str, manager_id: int | None, timezone: str | None
) -> Team:
    name = name.strip()
    clash = session.scalar(select(Team.id).where(Team.name == name, Team.id != (team.id if team else -1)))
    if clash:
        raise AccountError(_("团队名称 %(name)s 已存在。", name=name))
    if team is None:
        team = Team(name=name)
        session.add(team)
    team.name = name
    team.manager_id = manager_id
    team.timezone = timezone or None
    session.flush()
    if manager_id:
        manager = session.get(User, manager_id)
        if manager is not None and manager.team_id is None:
            manager.team_id = team.id
    return team


def save_level(session: Session, level: Level | None, data: dict) -> Level:
    name = data["name"].strip()
    clash = session.scalar(
        select(Level.id).where(Level.name == name, Level.id != (level.id if level else -1))
    )
    if clash:
        raise AccountError(_("职级名称 %(name)s 已存在。", name=name))
    if level is None:
        level = Level(name=name)
        session.add(level)
    level.name = name
    level.holding_cap = data["holding_cap"]
    level.rank = data.get("rank") or 0
    level.is_senior = bool(data.get("is_senior"))
    if data.get("lock_quota") is not None:
        level.lock_quota = data["lock_quota"]
    session.flush()
    return level
