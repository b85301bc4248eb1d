"""Intake forms: a lead (manual entry and ``POST /api/v1/leads``), behaviour events, the public web form,
lead-form administration and the import steps. Field rules come from ``crm.intake.services.prepare`` so
the form, the API and the import refuse the same things with the same words."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from crm.forms import FlaskForm, LocalDateTimeField, choices
from crm.scoring.config import EVENT_TYPES

JOB_LEVELS = ["决策层", "总监", "经理", "员工"]


def _optional_id(value):
    if value in (None, "", "None"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1  # not a choice: refused by validate_choice / the service


class LeadFields:
    """The fields of a lead, shared by the manual-entry form and the API form."""

    name = StringField(_l("公司名称"), validators=[Optional(), Length(max=120)])
    contact_name = StringField(_l("联系人"), validators=[Optional(), Length(max=60)])
    phone = StringField(_l("手机/电话"), validators=[Optional(), Length(max=40)])
    email = StringField(_l("邮箱"), validators=[Optional(), Length(max=254)])
    wechat = StringField(_l("微信"), validators=[Optional(), Length(max=60)])
    job_title = StringField(_l("职位"), validators=[Optional(), Length(max=60)])
    job_level = StringField(_l("职级"), validators=[Optional(), Length(max=20)])
    industry = StringField(_l("行业"), validators=[Optional(), Length(max=40)])
    region = StringField(_l("地区"), validators=[Optional(), Length(max=40)])
    company_size = StringField(_l("公司规模 (人数)"), validators=[Optional(), Length(max=40)])
    address = StringField(_l("地址"), validators=[Optional(), Length(max=200)])
    channel = StringField(_l("渠道"), validators=[Optional(), Length(max=60)])
    campaign = StringField(_l("市场活动"), validators=[Optional(), Length(max=80)])
    notes = TextAreaField(_l("备注"), validators=[Optional(), Length(max=2000)])

    def lead_dict(self) -> dict:
        return {name: getattr(self, name).data or "" for name in LEAD_FIELD_NAMES}


LEAD_FIELD_NAMES = [name for name, value in vars(LeadFields).items() if hasattr(value, "field_class")]


def apply_errors(form, errors) -> None:
    """Put the service's field errors (``FieldError``) on the form's fields."""
    for error in errors:
        field = getattr(form, error.field, None)
        if field is None:
            field = form.name
        field.errors = [*list(field.errors or []), str(error.message)]


class ManualLeadForm(LeadFields, FlaskForm):
    """新建: manual entry by a signed-in user."""

    pool_id = SelectField(_l("放入公海池"), coerce=_optional_id, validate_choice=True)
    take = BooleanField(_l("我来跟进 (创建后直接领取)"))


class ApiLeadForm(LeadFields, FlaskForm):
    """``POST /api/v1/leads``. ``utm`` may also be an object of utm_* keys."""

    pool_id = IntegerField(_l("公海池编号 (默认线索池)"), validators=[Optional()])
    utm_source = StringField("utm_source", validators=[Optional(), Length(max=200)])
    utm_medium = StringField("utm_medium", validators=[Optional(), Length(max=200)])
    utm_campaign = StringField("utm_campaign", validators=[Optional(), Length(max=200)])
    utm_term = StringField("utm_term", validators=[Optional(), Length(max=200)])
    utm_content = StringField("utm_content", validators=[Optional(), Length(max=200)])
    arrived_at = LocalDateTimeField(_l("到达时间 (ISO 8601,默认现在)"), validators=[Optional()])


class EventForm(FlaskForm):
    """``POST /api/v1/events``: a scoring behaviour event for a customer (by id, phone or email)."""

    customer_id = IntegerField(_l("客户编号"), validators=[Optional()])
    phone = StringField(_l("手机/电话 (无客户编号时用于查找)"), validators=[Optional(), Length(max=40)])
    email = StringField(_l("邮箱 (无客户编号时用于查找)"), validators=[Optional(), Length(max=254)])
    type = SelectField(
        _l("事件类型"),
        choices=choices(EVENT_TYPES),
        validators=[DataRequired(_l("请填写事件类型。"))],
    )
    at = LocalDateTimeField(_l("发生时间 (ISO 8601,默认现在)"), validators=[Optional()])
    external_id = StringField(
        _l("调用方的事件编号 (重复提交只记一次)"), validators=[Optional(), Length(max=80)]
    )
    url = StringField(_l("页面/资料地址"), validators=[Optional(), Length(max=500)])


class PublicLeadForm(FlaskForm):
    """The public web form (/f/<slug>): its own signed token instead of the session CSRF token."""

    class Meta:
        csrf = False

    contact_name = StringField(
        _l("您的姓名"), validators=[DataRequired(_l("请填写您的姓名。")), Length(max=60)]
    )
    phone = StringField(_l("手机号码"), validators=[DataRequired(_l("请填写手机号码。")), Length(max=40)])
    name = StringField(_l("公司名称"), validators=[Optional(), Length(max=120)])
    email = StringField(_l("邮箱"), validators=[Optional(), Length(max=254)])
    wechat = StringField(_l("微信号"), validators=[Optional(), Length(max=60)])
    job_title = StringField(_l("职位"), validators=[Optional(), Length(max=60)])
    notes = TextAreaField(_l("需求描述"), validators=[Optional(), Length(max=1000)])
    # Honeypot: hidden from people, filled by bots that fill every field.
    website = StringField(_l("网址 (请留空)"), validators=[Optional()])
    token = HiddenField()
    utm_source = HiddenField()
    utm_medium = HiddenField()
    utm_campaign = HiddenField()
    utm_term = HiddenField()
    utm_content = HiddenField()


OPTIONAL_FORM_FIELDS = [
    ("name", _l("公司名称")),
    ("email", _l("邮箱")),
    ("wechat", _l("微信号")),
    ("job_title", _l("职位")),
    ("notes", _l("需求描述")),
]


class LeadFormAdminForm(FlaskForm):
    """An embeddable public form for a pool / campaign."""

    name = StringField(_l("表单名称"), validators=[DataRequired(_l("请填写表单名称。")), Length(max=60)])
    slug = StringField(
        _l("网址标识"),
        description=_l("出现在表单网址 /f/… 中;小写字母、数字和减号。"),
        validators=[
            DataRequired(_l("请填写网址标识。")),
            Length(min=3, max=40),
            Regexp(r"^[a-z0-9][a-z0-9-]*$", message=_l("只能用小写字母、数字和减号,且以字母或数字开头。")),
        ],
    )
    pool_id = SelectField(_l("线索进入的公海池"), coerce=_optional_id, validate_choice=True)
    channel = StringField(_l("渠道"), validators=[Optional(), Length(max=60)])
    campaign = StringField(_l("市场活动"), validators=[Optional(), Length(max=80)])
    intro = TextAreaField(_l("表单说明"), validators=[Optional(), Length(max=500)])
    thank_you = TextAreaField(
        _l("提交后的感谢语"), validators=[DataRequired(_l("请填写感谢语。")), Length(max=500)]
    )
    fields = SelectMultipleField(
        _l("选填字段 (姓名和手机始终要填)"),
        choices=choices(OPTIONAL_FORM_FIELDS),
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validate_choice=True,
    )
    enabled = BooleanField(_l("启用"), default=True)


class UploadForm(FlaskForm):
    file = FileField(_l("Excel 或 CSV 文件"))
    pool_id = SelectField(_l("导入到公海池"), coerce=_optional_id, validate_choice=True)
    channel = StringField(_l("渠道 (文件中没有该列时使用)"), validators=[Optional(), Length(max=60)])
    campaign = StringField(_l("市场活动 (文件中没有该列时使用)"), validators=[Optional(), Length(max=80)])


class IntakeSettingsForm(FlaskForm):
    fuzzy_threshold = IntegerField(
        _l("公司名称相似度阈值 (50–100)"),
        validators=[DataRequired(_l("请填写阈值。")), NumberRange(50, 100, message=_l("需为 50–100。"))],
    )
    lead_pool_id = SelectField(_l("默认线索池 (接口/手工录入)"), coerce=_optional_id, validate_choice=True)
    form_rate_limit = IntegerField(
        _l("网页表单: 每个地址最多提交次数"),
        validators=[DataRequired(), NumberRange(1, 1000, message=_l("需为 1–1000。"))],
    )
    form_rate_window_minutes = IntegerField(
        _l("…在多少分钟内"),
        validators=[DataRequired(), NumberRange(1, 1440, message=_l("需为 1–1440。"))],
    )
