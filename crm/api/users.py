"""``/api/v1/users``: list users (admins: everyone, managers: their team), create users and change role,
level, team, manager, active and ``away_until`` (admins). Deactivating or marking away can hand the
user's customers over in the same call (``move_customers_to``), each move ledgered.
"""

from __future__ import annotations

from flask import jsonify
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from crm import clock
from crm.access import access
from crm.admin import services as admin_services
from crm.admin.forms import NewUserForm, UserForm
from crm.api.core import ApiError, _form_value, bp, doc, json_body, jsonable
from crm.api.pools import refusal_error
from crm.auth.services import AccountError, create_user
from crm.extensions import db
from crm.forms import choices
from crm.models import Customer, Level, Role, Team, User
from crm.permissions import managed_user_ids
from crm.pool import services

PATCH_FIELDS = {
    "email", "name", "role", "level_id", "team_id", "manager_id", "phone", "regions", "skills", "away_until",
    "active", "move_customers_to", "override_cap",
}  # fmt: skip
PATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": list(Role.ALL)},
        "level_id": {"type": "integer", "nullable": True},
        "team_id": {"type": "integer", "nullable": True},
        "manager_id": {"type": "integer", "nullable": True},
        "active": {"type": "boolean", "description": "false = 停用 (离职)"},
        "away_until": {"type": "string", "format": "date-time", "nullable": True, "description": "休假至"},
        "name": {"type": "string"},
        "email": {"type": "string"},
        "phone": {"type": "string"},
        "regions": {"type": "array", "items": {"type": "string"}},
        "skills": {"type": "array", "items": {"type": "string"}},
        "move_customers_to": {
            "description": '交接该用户的全部客户: 用户 id,或 "pool" 退回各自公海 (每个移动都记入流转记录)',
            "oneOf": [{"type": "integer"}, {"type": "string", "enum": ["pool"]}],
        },
        "override_cap": {"type": "boolean", "description": "交接给用户时允许突破其保有量上限"},
    },
}


def _me() -> User:
    return current_user._get_current_object()


def user_json(user: User, held: int | None = None) -> dict:
    return jsonable(
        {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "level": {"id": user.level.id, "name": user.level.name, "holding_cap": user.level.holding_cap}
            if user.level
            else None,
            "team": {"id": user.team.id, "name": user.team.name} if user.team else None,
            "manager_id": user.manager_id,
            "active": user.active,
            "away_until": user.away_until,
            "deactivated_at": user.deactivated_at,
            "phone": user.phone,
            "regions": user.regions or [],
            "skills": user.skills or [],
            "held": held if held is not None else services.held_count(db.session, user.id),
            "cap": services.holding_cap(db.session, user),
        }
    )


def _fill_choices(form: UserForm) -> None:
    none = [(None, "—")]
    form.level_id.choices = choices(none + [(lv.id, lv.name) for lv in db.session.scalars(select(Level))])
    form.team_id.choices = choices(none + [(t.id, t.name) for t in db.session.scalars(select(Team))])
    managers = db.session.scalars(select(User).where(User.role.in_([Role.MANAGER, Role.ADMIN])))
    form.manager_id.choices = choices(none + [(u.id, u.name) for u in managers])


def _user_form(form_class: type, payload: dict) -> UserForm:
    """Validate a JSON body with the admin user form (its select choices need filling first)."""
    data = MultiDict()
    for key, value in _listish(payload).items():
        for item in _form_value(value):
            data.add(key, item)
    form = form_class(formdata=data, meta={"csrf": False})
    _fill_choices(form)
    if not form.validate():
        errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
        raise ApiError(422, "invalid", next(iter(errors.values()))[0], fields=errors)
    return form


def _listish(payload: dict) -> dict:
    data = dict(payload)
    for key in ("regions", "skills"):
        if isinstance(data.get(key), list):
            data[key] = ", ".join(str(v) for v in data[key])
    return data


@bp.route("/users", methods=["GET"])
@access(Role.MANAGER)
@doc("用户列表 (管理员: 全部; 主管: 自己的团队)")
def users_index():
    """Users with role, level, team, state, and how many customers each holds against their cap."""
    ids = managed_user_ids(db.session, _me())
    query = select(User).order_by(User.id)
    if ids is not None:
        query = query.where(User.id.in_(ids))
    users = db.session.scalars(query).all()
    held = dict(
        db.session.execute(
            select(Customer.owner_id, func.count())
            .where(Customer.owner_id.in_([u.id for u in users]), Customer.merged_into_id.is_(None))
            .group_by(Customer.owner_id)
        ).all()
    )
    return jsonify(users=[user_json(u, held.get(u.id, 0)) for u in users])


@bp.route("/users", methods=["POST"])
@access(Role.ADMIN)
@doc("新建用户 (管理员)", body=NewUserForm, scope="admin", responses={201: "新建的用户"})
def users_create():
    """Create an active user (email, name, password ≥ 8, role, optional level/team/manager/away_until)."""
    form = _user_form(NewUserForm, json_body())
    try:
        user = create_user(
            db.session, email=form.email.data, name=form.name.data, password=form.password.data,
            role=form.role.data, now=clock.now(),
        )  # fmt: skip
        admin_services.update_user(db.session, user, _me(), dict(form.data, away_until=form.away_until.utc))
    except AccountError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc)) from exc
    db.session.commit()
    return jsonify(user_json(user)), 201


def _current_values(user: User) -> dict:
    return {
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "level_id": user.level_id,
        "team_id": user.team_id,
        "manager_id": user.manager_id,
        "phone": user.phone,
        "regions": ", ".join(user.regions or []),
        "skills": ", ".join(user.skills or []),
        "away_until": user.away_until.isoformat() if user.away_until else None,
    }


@bp.route("/users/<int:user_id>", methods=["PATCH"])
@access(Role.ADMIN)
@doc("修改用户:角色、职级、团队、主管、在职状态、休假至 (管理员)", body=PATCH_SCHEMA, scope="admin")
def users_patch(user_id: int):
    """Change some fields of a user (only the keys given). ``active: false`` deactivates (离职) and ends
    their sessions. ``move_customers_to`` hands all their customers to a user id or back to their pools
    (``"pool"``) in the same call; refusals of the handover answer like the pool actions (e.g. 422
    holding_cap) and then nothing of this call is saved."""
    user = db.session.get(User, user_id)
    if user is None:
        raise ApiError(404, "not_found", "用户不存在。")
    payload = json_body()
    unknown = sorted(set(payload) - PATCH_FIELDS)
    if unknown:
        raise ApiError(
            422, "invalid", f"未知字段: {', '.join(unknown)}", fields={k: ["未知字段"] for k in unknown}
        )
    active = payload.pop("active", None)
    if active is not None and not isinstance(active, bool):
        raise ApiError(422, "invalid", "active 必须是 true 或 false。", fields={"active": ["必须是布尔值"]})
    move_to = payload.pop("move_customers_to", None)
    override = bool(payload.pop("override_cap", False))
    receiver = None
    if move_to not in (None, "pool"):
        receiver = (
            db.session.get(User, move_to)
            if isinstance(move_to, int) and not isinstance(move_to, bool)
            else None
        )
        if receiver is None:
            raise ApiError(
                422,
                "invalid",
                'move_customers_to 必须是用户 id 或 "pool"。',
                fields={"move_customers_to": ["无效"]},
            )
    form = _user_form(UserForm, _current_values(user) | payload)
    me = _me()
    now = clock.now()
    try:
        admin_services.update_user(db.session, user, me, dict(form.data, away_until=form.away_until.utc))
        if active is not None and active != user.active:
            admin_services.set_active(db.session, user, me, active, now)
    except AccountError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc)) from exc
    moved = None
    if move_to is not None:
        db.session.flush()
        try:
            result = services.move_all_customers(
                db.session, user, me, now, to_user=receiver, override_cap=override
            )  # commits the user changes together with the moves
        except services.PoolRefusal as refusal:
            raise refusal_error(refusal) from refusal
        moved = {
            "moved": result.assigned,
            "refused": [
                {"id": cid, "error": r.code, "message": r.message} for cid, r in result.refused.items()
            ],
        }
    db.session.commit()
    data = user_json(db.session.get(User, user.id))
    if moved is not None:
        data["handover"] = moved
    return jsonify(data)
