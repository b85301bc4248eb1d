"""Administration screens: users (create, edit, deactivate, away, reset password), teams and levels."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from crm import clock
from crm.access import access
from crm.admin import services
from crm.admin.forms import LevelForm, NewUserForm, ResetPasswordForm, TeamForm, UserForm
from crm.auth import sessions
from crm.auth.services import AccountError, create_user, set_password
from crm.extensions import db
from crm.forms import choices
from crm.htmx import render
from crm.models import Customer, Level, Role, Team, User

bp = Blueprint("admin", __name__, url_prefix="/admin")

COMMON_TIMEZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "UTC"]


def _get_or_404(model, object_id: int):
    obj = db.session.get(model, object_id)
    if obj is None:
        abort(404)
    return obj


def _fill_choices(form: UserForm) -> None:
    none = [(None, _("— 无 —"))]
    form.level_id.choices = choices(none + [(lv.id, f"{lv.name} ({lv.holding_cap})") for lv in _levels()])
    form.team_id.choices = choices(none + [(t.id, t.name) for t in _teams()])
    managers = db.session.scalars(
        select(User)
        .where(User.role.in_([Role.MANAGER, Role.ADMIN]), User.active.is_(True))
        .order_by(User.name)
    )
    form.manager_id.choices = choices(none + [(u.id, u.name) for u in managers])


def _field_error(form, exc: AccountError) -> None:
    """Show a service refusal under the field it is about (the email field when it names none)."""
    field = getattr(form, exc.field or "", None) or form.email
    field.errors = [*field.errors, str(exc)]


def _levels():
    return db.session.scalars(select(Level).order_by(Level.rank, Level.name)).all()


def _teams():
    return db.session.scalars(select(Team).order_by(Team.name)).all()


@bp.route("/")
@access(Role.ADMIN)
def index():
    """管理: the menu of every administration screen, one tappable row each (phones get this page instead of
    a row of pills on every admin screen)."""
    return render("admin/menu.html")


@bp.route("/users")
@access(Role.ADMIN)
def users():
    """All users with role, level, team, state and how many customers they hold."""
    held = dict(
        db.session.execute(
            select(Customer.owner_id, func.count())
            .where(Customer.owner_id.is_not(None))
            .group_by(Customer.owner_id)
        ).all()
    )
    rows = db.session.scalars(select(User).order_by(User.active.desc(), User.name)).all()
    return render("admin/users.html", users=rows, held=held, now=clock.now())


@bp.route("/users/new", methods=["GET", "POST"])
@access(Role.ADMIN)
def new_user():
    """Create a user."""
    form = NewUserForm()
    _fill_choices(form)
    if form.validate_on_submit():
        try:
            user = create_user(
                db.session,
                email=form.email.data,
                name=form.name.data,
                password=form.password.data,
                role=form.role.data,
                now=clock.now(),
            )
            data = dict(form.data, away_until=form.away_until.utc)
            services.update_user(db.session, user, current_user, data)
        except AccountError as exc:
            db.session.rollback()
            _field_error(form, exc)
        else:
            db.session.commit()
            flash(_("已创建用户 %(name)s。", name=user.name), "success")
            return redirect(url_for("admin.users"))
    status = 422 if request.method == "POST" else 200
    return render("admin/user_form.html", "user_form", status=status, form=form, user=None)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@access(Role.ADMIN)
def edit_user(user_id: int):
    """Edit a user's role, level, team, manager, skills and away-until."""
    user = _get_or_404(User, user_id)
    form = UserForm(obj=user)
    _fill_choices(form)
    if request.method == "GET":
        form.regions.data = ", ".join(user.regions or [])
        form.skills.data = ", ".join(user.skills or [])
        form.away_until.data = clock.to_local_naive(user.away_until)
    if form.validate_on_submit():
        try:
            data = dict(form.data, away_until=form.away_until.utc)
            services.update_user(db.session, user, current_user, data)
        except AccountError as exc:
            db.session.rollback()
            _field_error(form, exc)
        else:
            db.session.commit()
            flash(_("已保存 %(name)s。", name=user.name), "success")
            return redirect(url_for("admin.users"))
    status = 422 if request.method == "POST" else 200
    return render(
        "admin/user_form.html",
        "user_form",
        status=status,
        form=form,
        user=user,
        reset_form=ResetPasswordForm(prefix="reset"),
    )


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@access(Role.ADMIN)
def reset_password(user_id: int):
    """Set a new password for a user; their other sessions end."""
    user = _get_or_404(User, user_id)
    form = ResetPasswordForm(prefix="reset")
    if form.validate_on_submit():
        now = clock.now()
        set_password(db.session, user, form.password.data, now)
        db.session.commit()
        if user.id == current_user.id:  # an admin resetting their own: this browser stays signed in
            sessions.restart_after_password_change(db.session, user, now)
        flash(_("已重置 %(name)s 的密码,其登录已全部退出。", name=user.name), "success")
        return redirect(url_for("admin.edit_user", user_id=user.id))
    edit_form = UserForm(obj=user)
    _fill_choices(edit_form)
    return render("admin/user_form.html", status=422, form=edit_form, user=user, reset_form=form)


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@access(Role.ADMIN)
def set_active(user_id: int):
    """Deactivate (离职) or reactivate a user."""
    user = _get_or_404(User, user_id)
    active = request.form.get("active") == "1"
    try:
        services.set_active(db.session, user, current_user, active, clock.now())
    except AccountError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        form = UserForm(obj=user, formdata=None)
        _fill_choices(form)
        return render(
            "admin/user_form.html",
            status=422,
            form=form,
            user=user,
            reset_form=ResetPasswordForm(prefix="reset"),
        )
    db.session.commit()
    flash(
        _("已启用 %(name)s。", name=user.name) if active else _("已停用 %(name)s。", name=user.name),
        "success",
    )
    return redirect(url_for("admin.edit_user", user_id=user.id)), 303


def _team_form(team: Team | None) -> TeamForm:
    form = TeamForm(obj=team).fill_choices(db.session)
    if team is not None and request.method == "GET":
        form.timezone.data = team.timezone or ""
    return form


@bp.route("/teams", methods=["GET", "POST"])
@access(Role.ADMIN)
def teams():
    """Teams with their managers; create a team."""
    form = _team_form(None)
    if form.validate_on_submit():
        try:
            services.save_team(db.session, None, form.name.data, form.manager_id.data, form.timezone.data)
        except AccountError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("已创建团队。"), "success")
            return redirect(url_for("admin.teams"))
    status = 422 if request.method == "POST" else 200
    return render("admin/teams.html", "team_form", status=status, form=form, teams=_teams(), team=None)


@bp.route("/teams/<int:team_id>", methods=["GET", "POST"])
@access(Role.ADMIN)
def edit_team(team_id: int):
    """Rename a team, change its manager or time zone."""
    team = _get_or_404(Team, team_id)
    form = _team_form(team)
    if form.validate_on_submit():
        try:
            services.save_team(db.session, team, form.name.data, form.manager_id.data, form.timezone.data)
        except AccountError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("已保存团队。"), "success")
            return redirect(url_for("admin.teams"))
    status = 422 if request.method == "POST" else 200
    return render("admin/teams.html", "team_form", status=status, form=form, teams=_teams(), team=team)


@bp.route("/levels", methods=["GET", "POST"])
@access(Role.ADMIN)
def levels():
    """Levels (职级) and their holding caps (保有量); create a level."""
    form = LevelForm()
    if form.validate_on_submit():
        try:
            services.save_level(db.session, None, form.data)
        except AccountError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("已创建职级。"), "success")
            return redirect(url_for("admin.levels"))
    status = 422 if request.method == "POST" else 200
    return render("admin/levels.html", "level_form", status=status, form=form, levels=_levels(), level=None)


@bp.route("/levels/<int:level_id>", methods=["GET", "POST"])
@access(Role.ADMIN)
def edit_level(level_id: int):
    """Change a level's name, cap or seniority."""
    level = _get_or_404(Level, level_id)
    form = LevelForm(obj=level)
    if form.validate_on_submit():
        try:
            services.save_level(db.session, level, form.data)
        except AccountError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("已保存职级。"), "success")
            return redirect(url_for("admin.levels"))
    status = 422 if request.method == "POST" else 200
    return render("admin/levels.html", "level_form", status=status, form=form, levels=_levels(), level=level)
