"""Sign-in, password and token forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from wtforms import BooleanField, PasswordField, SelectMultipleField, StringField, widgets
from wtforms.validators import DataRequired, EqualTo, Length

from crm.auth.services import SCOPES
from crm.forms import FlaskForm, choices


class LoginForm(FlaskForm):
    email = StringField(_l("邮箱"), validators=[DataRequired(_l("请填写邮箱。")), Length(max=254)])
    password = PasswordField(_l("密码"), validators=[DataRequired(_l("请填写密码。")), Length(max=200)])
    remember = BooleanField(_l("记住我"))


class PasswordForm(FlaskForm):
    current = PasswordField(
        _l("当前密码"), validators=[DataRequired(_l("请填写当前密码。")), Length(max=200)]
    )
    password = PasswordField(
        _l("新密码"),
        validators=[
            DataRequired(_l("请填写新密码。")),
            Length(min=8, max=200, message=_l("密码需 8–200 位。")),
        ],
    )
    confirm = PasswordField(
        _l("确认新密码"), validators=[EqualTo("password", message=_l("两次输入的密码不一致。"))]
    )


class TokenForm(FlaskForm):
    name = StringField(_l("令牌名称"), validators=[DataRequired(_l("请填写令牌名称。")), Length(max=60)])
    scopes = SelectMultipleField(
        _l("权限范围"),
        choices=choices((k, LazyString(lambda k=k, v=v: f"{k} — {v}")) for k, v in SCOPES.items()),
        default=["read", "write"],
        option_widget=widgets.CheckboxInput(),
        widget=widgets.ListWidget(prefix_label=False),
        validators=[DataRequired(_l("至少选择一个权限范围。"))],
    )
