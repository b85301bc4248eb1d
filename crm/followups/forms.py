"""The follow-up form (跟进记录) — the same form validates the web UI and ``POST /api/v1/customers/<id>/followups``."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, HiddenField, IntegerField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from crm import clock
from crm.forms import FlaskForm, LocalDateTimeField, choices
from crm.models import Channel
from crm.reminders.services import MAX_AHEAD

from .services import CONTENT_MAX, PLAN_MAX, record_followup

CHANNEL_CHOICES = choices((c, _l(Channel.LABELS[c])) for c in Channel.ALL)


class TimeField(LocalDateTimeField):
    """A local date-time whose parse error is a clear Chinese message (not WTForms' English one)."""

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError as exc:
            self.data = None
            raise ValueError(str(_l("时间格式不正确,请选择日期和时间。"))) from exc


def future_time(form, field) -> None:
    """Later than now and within a year."""
    if field.utc is None:
        return
    now = clock.now()
    if field.utc <= now:
        raise ValidationError(str(_l("时间必须晚于现在。")))
    if field.utc > now + MAX_AHEAD:
        raise ValidationError(str(_l("时间不能超过一年之后。")))


class YesNoField(BooleanField):
    """是 / 否 as a segmented control; JSON ``true``/``false`` for the API."""

    false_values = (False, "false", "", "n", "no", "0", "off")


def known_channel(form, field) -> None:
    if field.data not in Channel.ALL:
        raise ValidationError(str(_l("未知的跟进方式,请选择 电话/微信/拜访/邮件/会议/其他。")))


class FollowUpForm(FlaskForm):
    channel = RadioField(
        _l("跟进方式"),
        choices=CHANNEL_CHOICES,
        default=Channel.PHONE,
        validate_choice=False,
        validators=[InputRequired(_l("请选择跟进方式。")), known_channel],
    )
    content = TextAreaField(
        _l("沟通内容"),
        validators=[
            DataRequired(_l("请填写跟进内容。")),
            Length(max=CONTENT_MAX, message=_l("跟进内容不能超过 %(max)d 字。")),
        ],
    )
    goal_met = YesNoField(_l("本次目标达成"), default=False)
    next_plan = StringField(
        _l("下次计划"),
        validators=[
            DataRequired(_l("请填写下次计划。")),
            Length(max=PLAN_MAX, message=_l("下次计划不能超过 %(max)d 字。")),
        ],
    )
    next_contact_at = TimeField(
        _l("下次联系时间"),
        validators=[InputRequired(_l("请选择下次联系时间。")), future_time],
        description=_l("ISO 8601,带时区,如 2026-03-14T10:00:00+08:00"),
    )
    reminder_id = IntegerField(
        _l("回应的提醒"), validators=[Optional()], description=_l("从哪条提醒跟进(保存后该提醒关闭)")
    )
    confirm_over_cap = BooleanField(
        _l("仍然保存(已超出联系频率上限)"), description=_l("超出联系频率上限时确认仍要保存")
    )

    def record(self, session, customer, user, now):
        """Save the validated form through the one follow-up service function (web and API alike)."""
        return record_followup(
            session,
            customer,
            user,
            channel=self.channel.data,
            content=self.content.data,
            goal_met=bool(self.goal_met.data),
            next_plan=self.next_plan.data,
            next_contact_at=self.next_contact_at.utc,
            now=now,
            answered_reminder_id=self.reminder_id.data,
            confirm_over_cap=bool(self.confirm_over_cap.data),
        )


class FollowUpPageForm(FollowUpForm):
    """The web form adds where to go back to after saving."""

    next = HiddenField()
