"""Forms of the pool screens and the pool API (the same classes validate web posts and JSON bodies)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from crm.forms import FlaskForm, choices
from crm.models import AssignStrategy, PrevOwnerRule
from crm.pool.manage import POOL_KINDS, PREV_OWNER_LABELS, STRATEGY_LABELS, parse_times


def _int_or_none(value):
    if value in (None, "", "None"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(_l("请选择有效的选项。"))) from exc


class IdListField(SelectMultipleField):
    """A list of ids (checkboxes, or a JSON array); any integer is accepted, the service checks them."""

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, coerce=int, validate_choice=False, **kwargs)

    def process_formdata(self, valuelist):
        try:
            self.data = [int(v) for v in valuelist if str(v).strip() != ""]
        except ValueError as exc:
            self.data = []
            raise ValueError(str(_l("编号必须是整数。"))) from exc


class ReleaseForm(FlaskForm):
    """退回公海: reason from the configured list, and a handoff note for the next person."""

    reason = SelectField(
        _l("退回原因"), validators=[DataRequired(_l("请选择退回原因。"))], validate_choice=False
    )
    note = TextAreaField(
        _l("交接说明"),
        validators=[
            DataRequired(_l("请填写交接说明,方便下一位同事跟进。")),
            Length(min=2, max=1000, message=_l("交接说明需 2–1000 字。")),
        ],
        description=_l("客户情况、已沟通内容、下一步建议(必填)"),
    )


class AssignForm(FlaskForm):
    """分配 / 转移 one customer to a user."""

    user_id = IntegerField(_l("接收人"), validators=[InputRequired(_l("请选择接收人。"))])
    override_cap = BooleanField(_l("突破保有量上限(仅主管/管理员,会记入流转记录)"))
    note = StringField(_l("备注"), validators=[Optional(), Length(max=200)])


class BulkAssignForm(AssignForm):
    """分配 / 转移 several customers at once (board or customer list selection)."""

    customer_ids = IdListField(_l("客户"), validators=[DataRequired(_l("请选择要分配的客户。"))])


class ReturnToPoolForm(FlaskForm):
    """Managers put selected customers back into their home pools."""

    customer_ids = IdListField(_l("客户"), validators=[DataRequired(_l("请选择客户。"))])
    reason = SelectField(
        _l("退回原因"), validators=[DataRequired(_l("请选择退回原因。"))], validate_choice=False
    )
    note = TextAreaField(_l("交接说明"), validators=[Optional(), Length(max=1000)])


class HandoverForm(FlaskForm):
    """Departures (离职/休假交接): move all of a user's customers in one action."""

    mode = RadioField(
        _l("移交方式"),
        choices=choices([("user", _l("全部转给一位同事")), ("pool", _l("全部退回各自的公海"))]),
        default="user",
    )
    user_id = SelectField(_l("接收人"), coerce=_int_or_none, validate_choice=False)
    fallback_pool_id = SelectField(_l("没有所属公海的客户放入"), coerce=_int_or_none, validate_choice=False)
    override_cap = BooleanField(_l("允许突破接收人的保有量上限"))
    deactivate = BooleanField(_l("同时停用该账号(离职)"))
    reason = StringField(_l("交接原因"), validators=[Optional(), Length(max=200)])

    def validate_user_id(self, field):
        if self.mode.data == "user" and not field.data:
            raise ValidationError(_l("请选择接收人。"))


class PoolForm(FlaskForm):
    """A pool's settings: members, admins, limits, previous-owner rule, masking, auto-assign, release."""

    name = StringField(_l("公海名称"), validators=[DataRequired(_l("请填写公海名称。")), Length(max=60)])
    description = TextAreaField(_l("说明"), validators=[Optional(), Length(max=500)])
    kind = SelectField(
        _l("类型"), choices=choices((k, _l(v)) for k, v in POOL_KINDS.items()), default="general"
    )
    enabled = BooleanField(_l("启用(停用后不能领取,仍可分配)"), default=True)
    member_user_ids = IdListField(_l("成员(个人)"))
    member_team_ids = IdListField(_l("成员(整个团队)"))
    admin_user_ids = IdListField(_l("公海管理员"))
    daily_claim_limit = IntegerField(
        _l("每人每日领取上限"),
        default=3,
        validators=[
            InputRequired(_l("请填写每日领取上限。")),
            NumberRange(1, 1000, _l("需在 1–1000 之间。")),
        ],
    )
    prev_owner_rule = RadioField(
        _l("原负责人规则"),
        choices=choices((k, _l(v)) for k, v in PREV_OWNER_LABELS.items()),
        default=PrevOwnerRule.COOLDOWN,
    )
    prev_owner_days = IntegerField(
        _l("规则天数 N"), default=7, validators=[Optional(), NumberRange(0, 365, _l("需在 0–365 之间。"))]
    )
    mask_contacts = BooleanField(_l("领取前隐藏联系方式(138****5678)"), default=True)
    auto_assign_strategy = SelectField(
        _l("自动分配策略"),
        choices=choices((k, _l(v)) for k, v in STRATEGY_LABELS.items()),
        default=AssignStrategy.NONE,
    )
    fair_release = BooleanField(_l("定时释放:回收/退回的客户在固定时间统一放出"))
    release_times = StringField(
        _l("释放时间"),
        validators=[Optional(), Length(max=100)],
        description=_l("如 10:00, 15:00(团队时区)"),
    )
    nurture_allowed = BooleanField(_l("允许长期培育(到期未跟进自动回收)"), default=True)
    nurture_max_days = IntegerField(
        _l("长期培育最长天数"),
        default=90,
        validators=[
            InputRequired(_l("请填写长期培育最长天数。")),
            NumberRange(1, 730, _l("需在 1–730 之间。")),
        ],
    )
    region = StringField(_l("区域"), validators=[Optional(), Length(max=40)])
    industry = StringField(_l("行业"), validators=[Optional(), Length(max=40)])
    embargo_hours = IntegerField(
        _l("入池冷静期(小时)"),
        default=0,
        validators=[Optional(), NumberRange(0, 720, _l("需在 0–720 之间。"))],
    )

    def validate_release_times(self, field):
        try:
            parse_times(field.data)
        except ValueError as exc:
            raise ValidationError(_l("时间格式应为 HH:MM,例如 10:00。")) from exc

    def cleaned(self) -> dict:
        """Form data in the shape ``manage.save_pool`` takes."""
        data = {name: f.data for name, f in self._fields.items() if name not in ("csrf_token",)}
        data["release_times"] = parse_times(self.release_times.data)
        data["prev_owner_days"] = self.prev_owner_days.data or 0
        data["embargo_hours"] = self.embargo_hours.data or 0
        return data


class PoolRulesForm(FlaskForm):
    """Settings → 公海规则: the release reasons list and the default holding cap."""

    release_reasons = TextAreaField(
        _l("退回原因(每行一个)"), validators=[DataRequired(_l("至少保留一个退回原因。")), Length(max=2000)]
    )
    default_holding_cap = IntegerField(
        _l("未设职级用户的保有量上限"),
        validators=[
            InputRequired(_l("请填写保有量上限。")),
            NumberRange(1, 10000, _l("保有量需在 1–10000 之间。")),
        ],
    )
    won_count_toward_cap = BooleanField(_l("成交客户计入保有量"), default=True)
