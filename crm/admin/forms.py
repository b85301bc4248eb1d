"""Admin forms: users, teams, levels."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional

from crm.forms import FlaskForm, LocalDateTimeField, choices
from crm.models import Role

COMMON_TIMEZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "UTC"]

ROLE_CHOICES = choices((r, _l(Role.LABELS[r])) for r in Role.ALL)


def _optional_id(value):
    return int(value) if value not in (None, "", "None") else None


class UserForm(FlaskForm):
    email = EmailField(
        _l("邮箱"),
        validators=[DataRequired(_l("请填写邮箱。")), Email(_l("邮箱格式不正确。")), Length(max=254)],
    )
    name = StringField(_l("姓名"), validators=[DataRequired(_l("请填写姓名。")), Length(max=60)])
    role = SelectField(_l("角色"), choices=ROLE_CHOICES, default=Role.REP)
    level_id = SelectField(_l("职级"), coerce=_optional_id, validate_choice=True)
    team_id = SelectField(_l("团队"), coerce=_optional_id, validate_choice=True)
    manager_id = SelectField(_l("直属主管"), coerce=_optional_id, validate_choice=True)
    phone = StringField(_l("手机"), validators=[Optional(), Length(max=32)])
    regions = StringField(_l("擅长区域 (逗号分隔)"), validators=[Optional(), Length(max=200)])
    skills = StringField(_l("擅长行业 (逗号分隔)"), validators=[Optional(), Length(max=200)])
    away_until = LocalDateTimeField(_l("休假至"), validators=[Optional()])


class NewUserForm(UserForm):
    password = PasswordField(
        _l("初始密码"),
        validators=[
            DataRequired(_l("请填写初始密码。")),
            Length(min=8, max=200, message=_l("密码需 8–200 位。")),
        ],
    )


class ResetPasswordForm(FlaskForm):
    password = PasswordField(
        _l("新密码"),
        validators=[
            DataRequired(_l("请填写新密码。")),
            Length(min=8, max=200, message=_l("密码需 8–200 位。")),
        ],
    )


class TeamForm(FlaskForm):
    name = StringField(_l("团队名称"), validators=[DataRequired(_l("请填写团队名称。")), Length(max=60)])
    manager_id = SelectField(_l("主管"), coerce=_optional_id, validate_choice=True)
    timezone = SelectField(_l("时区"), default="")

    def fill_choices(self, session) -> TeamForm:
        """Managers (active managers and admins) and time zones to choose from (the web page and the API)."""
        from flask_babel import gettext as _
        from sqlalchemy import select

        from crm import clock
        from crm.models import User

        managers = session.scalars(
            select(User)
            .where(User.role.in_([Role.MANAGER, Role.ADMIN]), User.active.is_(True))
            .order_by(User.name)
        )
        self.manager_id.choices = choices([(None, _("— 无 —"))] + [(u.id, u.name) for u in managers])
        zones = COMMON_TIMEZONES + sorted(z for z in available_timezones() if z not in COMMON_TIMEZONES)
        self.timezone.choices = choices([("", _("默认 (%(tz)s)", tz=clock.default_tz_name()))] + zones)
        return self


class LevelForm(FlaskForm):
    name = StringField(_l("职级名称"), validators=[DataRequired(_l("请填写职级名称。")), Length(max=40)])
    holding_cap = IntegerField(
        _l("保有量上限"),
        # InputRequired, not DataRequired: 0 is an answer (refused by the range check with its own message).
        validators=[
            InputRequired(_l("请填写保有量上限。")),
            NumberRange(1, 10000, _l("保有量需在 1–10000 之间。")),
        ],
    )
    rank = IntegerField(_l("排序 (越大越资深)"), default=0, validators=[Optional(), NumberRange(0, 100)])
    is_senior = BooleanField(_l("资深 (可领取高难度客户)"))
    lock_quota = IntegerField(
        _l("可锁定客户数 (锁定后不被回收)"), default=0, validators=[Optional(), NumberRange(0, 1000)]
    )
