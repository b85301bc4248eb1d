"""Pipeline forms: opportunity (商机), lead conversion (一转三), stage settings and the lost-reason list.

The stage-change requirement forms (quote, follow-up, contract, lost reason) are posted as plain fields and
checked by ``crm.pipeline.services.change_stage`` itself, the one gate for web and API alike.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    DecimalField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from crm.forms import FlaskForm, choices
from crm.models import StageKind, StageRequirement
from crm.pipeline.services import OpportunityInput

REQUIREMENT_LABELS = {
    StageRequirement.NONE: _l("无要求"),
    StageRequirement.FOLLOWUP: _l("需要跟进记录(含下次联系时间)"),
    StageRequirement.QUOTE: _l("需要报价单"),
    StageRequirement.CONTRACT: _l("需要合同与开票信息"),
    StageRequirement.LOST_REASON: _l("需要输单原因"),
}
KIND_LABELS = {StageKind.OPEN: _l("进行中"), StageKind.WON: _l("成交"), StageKind.LOST: _l("输单")}
FUNNEL_LABELS = {
    "lead": _l("线索"),
    "communication": _l("沟通"),
    "intent": _l("意向"),
    "deal": _l("成交"),
    "lost": _l("输单"),
}


class DecimalText(DecimalField):
    """A decimal whose parse error is a clear Chinese message."""

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError as exc:
            self.data = None
            raise ValueError(str(_l("请填写数字。"))) from exc


class ChineseDateField(DateField):
    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError as exc:
            self.data = None
            raise ValueError(str(_l("日期格式不正确(如 2026-03-14)。"))) from exc


# Fields shared by the opportunity form and the 一转三 form (each call makes a new unbound field).
def _opportunity_name_field():
    return StringField(
        _l("商机名称"),
        validators=[
            DataRequired(_l("请填写商机名称。")),
            Length(max=120, message=_l("商机名称不超过 120 字。")),
        ],
    )


def _expected_amount_field():
    return DecimalText(
        _l("预计金额(元)"),
        places=2,
        validators=[Optional(), NumberRange(min=0, message=_l("金额不能为负数。"))],
    )


def _expected_close_field():
    return ChineseDateField(_l("预计成交日期"), validators=[Optional()])


class OpportunityForm(FlaskForm):
    name = _opportunity_name_field()
    amount = _expected_amount_field()
    expected_close = _expected_close_field()

    def input(self) -> OpportunityInput:
        """What the opportunity services take (web and API alike)."""
        return OpportunityInput(self.name.data, self.amount.data, self.expected_close.data)


class ConvertForm(FlaskForm):
    """一转三: the lead's contact becomes the primary contact; an opportunity opens."""

    contact_name = StringField(
        _l("联系人姓名"), validators=[Optional(), Length(max=60, message=_l("联系人姓名不超过 60 字。"))]
    )
    opportunity_name = _opportunity_name_field()
    amount = _expected_amount_field()
    expected_close = _expected_close_field()


class StageForm(FlaskForm):
    """An admin's edit of one stage."""

    name = StringField(
        _l("阶段名称"),
        validators=[
            DataRequired(_l("请填写阶段名称。")),
            Length(max=30, message=_l("阶段名称不超过 30 字。")),
        ],
    )
    position = IntegerField(
        _l("顺序"),
        validators=[
            InputRequired(_l("请填写顺序。")),
            NumberRange(min=1, max=999, message=_l("顺序需在 1–999 之间。")),
        ],
    )
    kind = SelectField(
        _l("类型"), choices=choices(KIND_LABELS.items()), validators=[InputRequired(_l("请选择类型。"))]
    )
    requirement = SelectField(
        _l("进入该阶段需要"),
        choices=choices(REQUIREMENT_LABELS.items()),
        validators=[InputRequired(_l("请选择进入要求。"))],
    )
    funnel = SelectField(
        _l("漏斗分组"),
        choices=choices(FUNNEL_LABELS.items()),
        validators=[InputRequired(_l("请选择漏斗分组。"))],
    )
    active = BooleanField(_l("启用"), default=True)


class LostReasonsForm(FlaskForm):
    lost_reasons = TextAreaField(
        _l("输单原因(每行一个)"), validators=[DataRequired(_l("至少保留一个输单原因。"))]
    )
