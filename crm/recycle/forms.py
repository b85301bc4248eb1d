"""Forms of the recycle screens; the JSON API validates with the same classes."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    FormField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    TextAreaField,
)
from wtforms.fields import FieldList
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from crm.forms import FlaskForm, Form, choices
from crm.models import CustomerKind, RuleKind
from crm.recycle.engine import RuleDef

KIND_CHOICES = choices(
    [
        (RuleKind.NO_FOLLOWUP, _l("未跟进 (N 天没有真实跟进)")),
        (RuleKind.NO_FIRST_CONTACT, _l("领取后未首次联系 (H 小时内)")),
        (RuleKind.NO_STAGE_PROGRESS, _l("阶段无推进 (N 天)")),
        (RuleKind.NO_DEAL, _l("领取后未成交 (N 天)")),
        (RuleKind.NURTURE_EXPIRY, _l("长期培育到期")),
    ]
)
DAY_KIND_CHOICES = choices([("calendar", _l("自然日")), ("working", _l("工作日 (按节假日日历)"))])
GRADE_CHOICES = choices([("A", "A"), ("B", "B"), ("C", "C")])
CUSTOMER_KIND_CHOICES = choices([(CustomerKind.COMPANY, _l("企业")), (CustomerKind.PERSON, _l("个人"))])


def _optional_int(value):
    if value in (None, "", "None", "null"):
        return None
    return int(value)


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(html_tag="ul", prefix_label=False)
    option_widget = CheckboxInput()


class RuleForm(Form):
    """One recycle rule. Limits: 1–3650 days, 1–8760 hours, warn/escalate 0–365 days."""

    id = HiddenField()
    kind = SelectField(_l("规则类型"), choices=KIND_CHOICES, default=RuleKind.NO_FOLLOWUP)
    days = IntegerField(
        _l("天数"), validators=[Optional(), NumberRange(1, 3650, _l("天数需在 1–3650 之间。"))]
    )
    hours = IntegerField(
        _l("小时数"), validators=[Optional(), NumberRange(1, 8760, _l("小时数需在 1–8760 之间。"))]
    )
    day_kind = RadioField(_l("计算方式"), choices=DAY_KIND_CHOICES, default="calendar")
    grades = MultiCheckboxField(_l("只对这些等级 (不选 = 全部)"), choices=GRADE_CHOICES)
    kinds = MultiCheckboxField(_l("只对这些客户类型 (不选 = 全部)"), choices=CUSTOMER_KIND_CHOICES)
    warn_days = IntegerField(
        _l("提前几天预警负责人 (0 = 不预警)"),
        default=0,
        validators=[Optional(), NumberRange(0, 365, _l("预警天数需在 0–365 之间。"))],
    )
    escalate_days = IntegerField(
        _l("提前几天上报主管 (0 = 不上报)"),
        default=0,
        validators=[Optional(), NumberRange(0, 365, _l("上报天数需在 0–365 之间。"))],
    )
    target_pool_id = SelectField(_l("回收到"), coerce=_optional_int, validate_choice=False)
    exclude_protected = BooleanField(_l("跳过受保护客户 (近期成交 / 主管保护)"), default=True)
    exclude_stage_id = SelectField(
        _l("有商机推进到此阶段及以后时不回收"), coerce=_optional_int, validate_choice=False
    )
    enabled = BooleanField(_l("启用"), default=True)
    remove = BooleanField(_l("删除这条规则"))

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        if self.kind.data not in RuleKind.ALL:
            self.kind.errors = [*self.kind.errors, str(_l("未知的规则类型。"))]
            return False
        if self.remove.data:
            return ok
        kind = self.kind.data
        warn = self.warn_days.data or 0
        esc = self.escalate_days.data or 0
        length_days = None
        if kind == RuleKind.NO_FIRST_CONTACT:
            if not self.hours.data and not self.days.data:
                self.hours.errors = [*self.hours.errors, str(_l("请填写领取后多少小时内需首次联系。"))]
                ok = False
            length_days = (self.hours.data / 24) if self.hours.data else self.days.data
        elif kind != RuleKind.NURTURE_EXPIRY:
            if not self.days.data:
                self.days.errors = [*self.days.errors, str(_l("请填写天数 (正整数)。"))]
                ok = False
            length_days = self.days.data
        if length_days and warn and warn >= length_days:
            self.warn_days.errors = [
                *self.warn_days.errors,
                str(_l("预警需早于回收: 预警天数要小于回收期限。")),
            ]
            ok = False
        if esc and esc >= warn:
            self.escalate_days.errors = [
                *self.escalate_days.errors,
                str(_l("先预警负责人、再上报主管: 预警天数需大于上报天数。")),
            ]
            ok = False
        return ok

    def rule_def(self, pool_id: int, position: int) -> RuleDef:
        kind = self.kind.data
        hours = self.hours.data if kind == RuleKind.NO_FIRST_CONTACT else None
        days = (
            None
            if kind == RuleKind.NURTURE_EXPIRY or (kind == RuleKind.NO_FIRST_CONTACT and hours)
            else self.days.data
        )
        return RuleDef(
            id=_optional_int(self.id.data), kind=kind, pool_id=pool_id, days=days, hours=hours,
            day_kind="calendar" if kind == RuleKind.NURTURE_EXPIRY else self.day_kind.data,
            grades=tuple(sorted(self.grades.data or ())), kinds=tuple(sorted(self.kinds.data or ())),
            warn_days=self.warn_days.data or 0, escalate_days=self.escalate_days.data or 0,
            target_pool_id=self.target_pool_id.data, exclude_protected=bool(self.exclude_protected.data),
            exclude_stage_id=self.exclude_stage_id.data, enabled=bool(self.enabled.data), position=position,
        )  # fmt: skip


class RulesForm(FlaskForm):
    """A pool's whole rule list, and the confirmation count when saving would recycle at once."""

    rules = FieldList(FormField(RuleForm), min_entries=0, max_entries=30)
    confirm = IntegerField(_l("确认立即回收的数量"), validators=[Optional()])

    def rule_defs(self, pool_id: int) -> list:
        kept = [entry.form for entry in self.rules if not entry.form.remove.data]
        return [form.rule_def(pool_id, i) for i, form in enumerate(kept)]


def fill_rule_choices(form: RulesForm, pools, stages) -> None:
    from flask_babel import gettext as _

    pool_choices = choices([(None, _("本公海 (默认)"))] + [(p.id, p.name) for p in pools])
    stage_choices = choices([(None, _("不排除"))] + [(s.id, s.name) for s in stages])
    for entry in form.rules:
        entry.form.target_pool_id.choices = pool_choices
        entry.form.exclude_stage_id.choices = stage_choices


class NurtureForm(FlaskForm):
    until = DateField(_l("培育到 (当天回收,除非期间有跟进)"), validators=[Optional()])


class ProtectForm(FlaskForm):
    until = DateField(_l("保护到 (含当天)"), validators=[Optional()])


class ExtensionForm(FlaskForm):
    days = IntegerField(
        _l("延期天数"),
        validators=[
            InputRequired(_l("请填写延期天数。")),
            NumberRange(1, 365, _l("延期天数需在 1–365 之间。")),
        ],
    )
    reason = TextAreaField(
        _l("延期理由"),
        validators=[
            DataRequired(_l("请填写延期理由。")),
            Length(max=500, message=_l("延期理由不超过 500 字。")),
        ],
    )


class DecisionForm(FlaskForm):
    note = TextAreaField(_l("审批意见"), validators=[Optional(), Length(max=500)])


class HolidayFileForm(FlaskForm):
    text = TextAreaField(
        _l("节假日 (每行: 日期,休/班,名称)"),
        validators=[DataRequired(_l("请粘贴节假日列表。")), Length(max=20000)],
    )
