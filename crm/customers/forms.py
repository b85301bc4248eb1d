"""Forms of the customer screens (also used to validate the JSON API bodies)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from crm.forms import FlaskForm, choices
from crm.intake import normalize
from crm.models import CustomerKind

KIND_LABELS = {CustomerKind.COMPANY: _l("企业"), CustomerKind.PERSON: _l("个人")}


def _phone_check(form, field):
    if field.data and sum(ch.isdigit() for ch in field.data) < 5:
        raise ValidationError(_l("电话号码至少 5 位数字。"))
    if field.data and normalize.has_letters(field.data):
        raise ValidationError(_l("电话号码中不能有字母。"))


def _clean_email(value):
    """mailto:, invisible characters, a display name and full-width ＠ 。 cleaned before validation."""
    return normalize.email_clean(value) if isinstance(value, str) else value


class CustomerForm(FlaskForm):
    """Customer fields a user may edit. Editing does not count as a follow-up (recycle clocks stay)."""

    name = StringField(_l("客户名称"), validators=[DataRequired(_l("请填写客户名称。")), Length(max=120)])
    kind = SelectField(_l("类型"), choices=choices(KIND_LABELS.items()), default=CustomerKind.COMPANY)
    contact_name = StringField(_l("联系人"), validators=[Optional(), Length(max=60)])
    job_title = StringField(_l("职位"), validators=[Optional(), Length(max=60)])
    job_level = StringField(_l("职级"), validators=[Optional(), Length(max=20)])
    phone = StringField(_l("电话"), validators=[Optional(), Length(max=40), _phone_check])
    email = EmailField(
        _l("邮箱"),
        filters=[_clean_email],
        validators=[Optional(), Email(_l("邮箱格式不正确。")), Length(max=254)],
    )
    wechat = StringField(_l("微信"), validators=[Optional(), Length(max=60)])
    address = StringField(_l("地址"), validators=[Optional(), Length(max=200)])
    region = StringField(_l("区域"), validators=[Optional(), Length(max=40)])
    industry = StringField(_l("行业"), validators=[Optional(), Length(max=40)])
    company_size = IntegerField(
        _l("规模(人)"), validators=[Optional(), NumberRange(0, 10_000_000, _l("请输入有效的人数。"))]
    )
    source = StringField(_l("来源"), validators=[Optional(), Length(max=40)])
    channel = StringField(_l("渠道"), validators=[Optional(), Length(max=60)])
    campaign = StringField(_l("活动"), validators=[Optional(), Length(max=80)])
    notes = TextAreaField(_l("备注"), validators=[Optional(), Length(max=5000)])


class ContactForm(FlaskForm):
    """联系人: a person at the customer; at least one of phone / email / WeChat."""

    name = StringField(_l("姓名"), validators=[DataRequired(_l("请填写联系人姓名。")), Length(max=60)])
    job_title = StringField(_l("职位"), validators=[Optional(), Length(max=60)])
    job_level = StringField(_l("职级"), validators=[Optional(), Length(max=20)])
    phone = StringField(_l("电话"), validators=[Optional(), Length(max=40), _phone_check])
    email = EmailField(
        _l("邮箱"),
        filters=[_clean_email],
        validators=[Optional(), Email(_l("邮箱格式不正确。")), Length(max=254)],
    )
    wechat = StringField(_l("微信"), validators=[Optional(), Length(max=60)])
    is_primary = BooleanField(_l("设为主要联系人"))


class TagsForm(FlaskForm):
    tags = StringField(
        _l("标签"), validators=[Optional(), Length(max=400)], description=_l("用逗号分隔,如:重点, 需定制方案")
    )
