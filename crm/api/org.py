"""``/api/v1/teams`` and ``/api/v1/levels``: teams (list, create, edit, members) and levels with their
holding caps and lock quotas (admins) — the same forms and services as Settings → 团队 / 职级."""

from __future__ import annotations

from flask import jsonify
from sqlalchemy import func, select

from crm.access import access
from crm.admin import services as admin_services
from crm.admin.forms import LevelForm, TeamForm
from crm.api.core import ApiError, bp, doc, form_from_json, get_or_404, json_body
from crm.auth.services import AccountError
from crm.extensions import db
from crm.models import Level, Role, Team, User


def team_json(team: Team, members: list[User] | None = None) -> dict:
    data = {"id": team.id, "name": team.name, "manager_id": team.manager_id, "timezone": team.timezone}
    if members is not None:
        data["members"] = [{"id": u.id, "name": u.name, "role": u.role, "active": u.active} for u in members]
    return data


def level_json(level: Level) -> dict:
    return {
        "id": level.id, "name": level.name, "holding_cap": level.holding_cap, "lock_quota": level.lock_quota,
        "is_senior": level.is_senior, "rank": level.rank,
    }  # fmt: skip


def _members(team_id: int) -> list[User]:
    return list(db.session.scalars(select(User).where(User.team_id == team_id).order_by(User.name, User.id)))


@bp.route("/teams", methods=["GET"])
@access(Role.ADMIN)
@doc("团队列表 (含主管、时区、人数)", scope="admin")
def teams_list():
    """Every team with its manager, time zone and member count."""
    counts = dict(db.session.execute(select(User.team_id, func.count()).group_by(User.team_id)).all())
    teams = db.session.scalars(select(Team).order_by(Team.name, Team.id))
    return jsonify(teams=[team_json(t) | {"member_count": counts.get(t.id, 0)} for t in teams])


@bp.route("/teams/<int:team_id>", methods=["GET"])
@access(Role.ADMIN)
@doc("一个团队及其成员", scope="admin")
def teams_get(team_id: int):
    """A team and its members (users whose team it is; set a user's team with ``PATCH /users/<id>``)."""
    team = get_or_404(Team, team_id, "团队不存在。")
    return jsonify(team_json(team, _members(team.id)))


def _save_team(team: Team | None):
    form = form_from_json(TeamForm, json_body(), prepare=lambda f: f.fill_choices(db.session))
    try:
        team = admin_services.save_team(
            db.session, team, form.name.data, form.manager_id.data, form.timezone.data
        )
    except AccountError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc), fields={"name": [str(exc)]}) from exc
    db.session.commit()
    return team


@bp.route("/teams", methods=["POST"])
@access(Role.ADMIN)
@doc("新建团队 (name, manager_id, timezone)", body=TeamForm, scope="admin", responses={201: "已创建"})
def teams_create():
    """Create a team; its manager joins it when they have no team yet."""
    team = _save_team(None)
    return jsonify(team_json(team, _members(team.id))), 201


@bp.route("/teams/<int:team_id>", methods=["PUT"])
@access(Role.ADMIN)
@doc("修改团队 (name, manager_id, timezone;整张表单)", body=TeamForm, scope="admin")
def teams_update(team_id: int):
    """Rename a team, change its manager or time zone."""
    team = get_or_404(Team, team_id, "团队不存在。")
    team = _save_team(team)
    return jsonify(team_json(team, _members(team.id)))


@bp.route("/levels", methods=["GET"])
@access(Role.ADMIN)
@doc("职级与保有量、锁定名额", scope="admin")
def levels_list():
    """Levels (职级) with their holding caps (保有量) and lock quotas (锁定名额). The default cap of users
    without a level and whether won customers count are in ``/settings/pool``."""
    levels = db.session.scalars(select(Level).order_by(Level.rank, Level.id))
    return jsonify(levels=[level_json(lv) for lv in levels])


def _save_level(level: Level | None) -> Level:
    form = form_from_json(LevelForm, json_body())
    try:
        level = admin_services.save_level(db.session, level, form.data)
    except AccountError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc), fields={"name": [str(exc)]}) from exc
    db.session.commit()
    return level


@bp.route("/levels", methods=["POST"])
@access(Role.ADMIN)
@doc("新建职级 (name, holding_cap, lock_quota, is_senior, rank)", body=LevelForm, scope="admin",
     responses={201: "已创建"})  # fmt: skip
def levels_create():
    """Create a level."""
    return jsonify(level_json(_save_level(None))), 201


@bp.route("/levels/<int:level_id>", methods=["PUT"])
@access(Role.ADMIN)
@doc("修改职级 (整张表单)", body=LevelForm, scope="admin")
def levels_update(level_id: int):
    """Change a level's name, holding cap, lock quota, seniority or rank."""
    return jsonify(level_json(_save_level(get_or_404(Level, level_id, "职级不存在。"))))
