"""Forms: custom reminders, snooze, notification settings, and the admin's reminder/channel settings."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional, Regexp

from crm.followups.forms import TimeField, future_time
from crm.forms import FlaskForm, choices

from .channels import KIND_LABELS
from .services import CHANNEL_LABELS, CHANNELS

HHMM = Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", message=_l("时间格式应为 HH:MM,如 22:00。"))


def _range(low: int, high: int):
    return NumberRange(low, high, message=_l("需在 %(min)s–%(max)s 之间。"))


def _int_field(label, low, high, **kw):
    return IntegerField(label, validators=[InputRequired(_l("请填写数字。")), _range(low, high)], **kw)


class CustomReminderForm(FlaskForm):
    """自定义提醒: "下周三提醒我发报价"."""

    title = StringField(
        _l("提醒我"),
        validators=[
            DataRequired(_l("请填写提醒内容。")),
            Length(max=200, message=_l("提醒内容不能超过 %(max)d 字。")),
        ],
        render_kw={"placeholder": _l("如:发报价单给王总")},
    )
    due_at = TimeField(_l("提醒时间"), validators=[InputRequired(_l("请选择提醒时间。")), future_time])
    customer_id = IntegerField(_l("客户"), validators=[Optional()])
    body = TextAreaField(
        _l("备注"), validators=[Optional(), Length(max=2000, message=_l("备注不能超过 %(max)d 字。"))]
    )
    user_id = IntegerField(
        _l("提醒谁"), validators=[Optional()], description=_l("主管可为团队成员设置;默认自己")
    )


class SnoozeForm(FlaskForm):
    until = TimeField(
        _l("稍后提醒时间"), validators=[InputRequired(_l("请选择稍后提醒的时间。")), future_time]
    )


class NotifyPrefsForm(FlaskForm):
    channels = SelectMultipleField(
        _l("提醒渠道"),
        choices=choices((c, _l(CHANNEL_LABELS[c])) for c in CHANNELS),
        option_widget=widgets.CheckboxInput(),
        widget=widgets.ListWidget(prefix_label=False),
    )
    quiet_start = StringField(_l("免打扰开始"), validators=[Optional(), HHMM], render_kw={"type": "time"})
    quiet_end = StringField(_l("免打扰结束"), validators=[Optional(), HHMM], render_kw={"type": "time"})


class CadenceForm(FlaskForm):
    grade_a = _int_field(_l("A 级客户回访间隔(天)"), 1, 365)
    grade_b = _int_field(_l("B 级客户回访间隔(天)"), 1, 365)
    grade_c = _int_field(_l("C 级客户回访间隔(天)"), 1, 365)
    new_customer_days = _int_field(_l("新客户首次联系期限(天)"), 1, 30)
    stall_days = _int_field(_l("高意向未推进阈值(天)"), 1, 365)
    default_next_days = _int_field(_l("跟进表单默认下次联系(天后)"), 1, 60)
    default_hour = _int_field(_l("默认联系时刻(点)"), 0, 23)
    overdue_escalation_hours = _int_field(_l("逾期多少小时通知主管"), 1, 720)


class FrequencyForm(FlaskForm):
    per_day = _int_field(_l("每个客户每天最多联系(次)"), 1, 50)
    per_week = _int_field(_l("每个客户 7 天内最多联系(次)"), 1, 200)
    mode = SelectField(
        _l("超出上限时"), choices=choices([("warn", _l("提醒,可确认后保存")), ("block", _l("禁止保存"))])
    )


class SpotCheckSettingsForm(FlaskForm):
    enabled = BooleanField(_l("每天给主管抽查团队跟进"))
    daily_sample = _int_field(_l("每位主管每天抽查条数"), 1, 100)


class DispatchForm(FlaskForm):
    max_attempts = _int_field(_l("最多尝试次数"), 1, 20)
    backoff_seconds = _int_field(_l("首次重试间隔(秒,之后翻倍)"), 1, 3600)
    backoff_max_seconds = _int_field(_l("最长重试间隔(秒)"), 1, 86400)
    claim_timeout_seconds = _int_field(_l("发送超时回收(秒)"), 30, 3600)
    app_url = StringField(
        _l("系统访问地址"),
        validators=[Optional(), Length(max=200)],
        description=_l("用于通知中的链接,如 https://crm.example.com"),
    )


class SmtpForm(FlaskForm):
    enabled = BooleanField(_l("启用邮件提醒"))
    host = StringField(_l("SMTP 服务器"), validators=[Optional(), Length(max=200)])
    port = _int_field(_l("端口"), 1, 65535)
    security = SelectField(
        _l("加密方式"),
        choices=choices([("none", _l("无")), ("starttls", "STARTTLS"), ("ssl", "SSL/TLS")]),
    )
    username = StringField(_l("用户名"), validators=[Optional(), Length(max=200)])
    password = PasswordField(
        _l("密码"), validators=[Optional(), Length(max=200)], description=_l("留空则保持原密码")
    )
    from_addr = StringField(_l("发件地址"), validators=[Optional(), Length(max=254)])
    from_name = StringField(_l("发件人名称"), validators=[Optional(), Length(max=60)])
    timeout = _int_field(_l("超时(秒)"), 1, 120)
    test_to = EmailField(
        _l("测试收件地址"), validators=[Optional(), Email(_l("邮箱格式不正确。")), Length(max=254)]
    )


class WebhookForm(FlaskForm):
    kind = SelectField(_l("类型"), choices=choices((k, _l(v)) for k, v in KIND_LABELS.items()))
    name = StringField(_l("名称"), validators=[DataRequired(_l("请填写名称。")), Length(max=60)])
    url = StringField(
        _l("Webhook 地址"), validators=[DataRequired(_l("请填写 Webhook 地址。")), Length(max=500)]
    )
    secret = StringField(
        _l("签名密钥"),
        validators=[Optional(), Length(max=200)],
        description=_l("钉钉「加签」的 SEC… 密钥;通用 Webhook 用于 X-CRM-Signature。编辑时留空则保持原值。"),
    )
    team_id = SelectField(_l("适用团队"), coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    enabled = BooleanField(_l("启用"), default=True)
