"""Follow-up records (跟进记录): the only real touches that reset recycle clocks (SPEC §3, §5).

``record_followup`` is the one function every caller uses (the form, the API, the pipeline's stage
changes). Saving a follow-up:
- validates it (known channel, content and next plan given and not too long, next-contact time in the
  future and within a year) and that the user may act on the customer;
- applies the contact-frequency cap (防骚扰, settings ``frequency_caps``): past it, ``block`` refuses and
  ``warn`` asks the rep to confirm (``confirm_over_cap=False`` raises ``FrequencyCapWarning``;
  ``True`` saves; ``None`` — a caller that does not ask — saves and flags ``over_cap``);
- updates the customer's clocks (last real follow-up, first contact, follow-ups this holding);
- closes the reminders it answers and creates the next-contact reminder;
- sends ``signals.followup_saved``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm import clock, signals
from crm.models import Channel, Customer, FollowUp, User
from crm.permissions import can_edit_customer
from crm.reminders import services as reminders
from crm.settings import store

CONTENT_MAX = 2000
PLAN_MAX = 500


class FollowUpError(ValueError):
    """Refused follow-up; ``field`` names the input at fault, ``code`` is the API error code."""

    code = "invalid"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class FollowUpForbidden(FollowUpError):
    code = "forbidden"


class FrequencyCapWarning(FollowUpError):
    """Over the contact-frequency cap in warn mode: the rep may confirm and save anyway."""

    code = "frequency_cap"

    def __init__(self, message: str, today: int, week: int):
        super().__init__(message, "confirm_over_cap")
        self.today, self.week = today, week


class FrequencyCapBlocked(FollowUpError):
    """Over the contact-frequency cap in block mode."""

    code = "frequency_blocked"


def contact_counts(
    session: Session, customer_id: int, now: datetime, tz: str | None = None
) -> tuple[int, int]:
    """Genuine follow-ups of the customer today and in the last 7 local days (today included)."""
    start, end = clock.local_day_bounds(tz, now)
    week_start = start - timedelta(days=6)
    row = session.execute(
        select(
            func.count().filter(FollowUp.at >= start),
            func.count(),
        ).where(
            FollowUp.customer_id == customer_id,
            FollowUp.is_fake.is_(False),
            FollowUp.at >= week_start,
            FollowUp.at < end,
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


def frequency_state(session: Session, customer: Customer, user: User, now: datetime) -> dict:
    """Where the customer stands against the cap: counts, limits, mode and whether one more is over."""
    caps = store.get(session, "frequency_caps")
    today, week = contact_counts(session, customer.id, now, reminders.user_tz(user))
    over = today + 1 > caps["per_day"] or week + 1 > caps["per_week"]
    return {"today": today, "week": week, "per_day": caps["per_day"], "per_week": caps["per_week"],
            "mode": caps["mode"], "over": over}  # fmt: skip


def _check_frequency(
    session: Session, customer: Customer, user: User, now: datetime, confirm: bool | None
) -> bool:
    state = frequency_state(session, customer, user, now)
    if not state["over"]:
        return False
    detail = _(
        "该客户今天已联系 %(today)s 次、近 7 天 %(week)s 次(上限每天 %(per_day)s 次、每周 %(per_week)s 次)。",
        **{k: state[k] for k in ("today", "week", "per_day", "per_week")},
    )
    if state["mode"] == "block":
        raise FrequencyCapBlocked(detail + " " + _("为避免打扰客户,暂不能再记录联系。"), "confirm_over_cap")
    if confirm is False:
        raise FrequencyCapWarning(
            detail + " " + _("频繁联系可能打扰客户,确定仍要保存吗?"), state["today"], state["week"]
        )
    return True


def validate(
    channel: str | None,
    content: str | None,
    next_plan: str | None,
    next_contact_at: datetime | None,
    now: datetime,
) -> None:
    """The rules of a follow-up's fields (the form checks the same, to show every error at once)."""
    if channel not in Channel.ALL:
        raise FollowUpError(_("未知的跟进方式,请选择 电话/微信/拜访/邮件/会议/其他。"), "channel")
    if not (content or "").strip():
        raise FollowUpError(_("请填写跟进内容。"), "content")
    if len(content.strip()) > CONTENT_MAX:
        raise FollowUpError(_("跟进内容不能超过 %(n)s 字。", n=CONTENT_MAX), "content")
    if not (next_plan or "").strip():
        raise FollowUpError(_("请填写下次计划。"), "next_plan")
    if len(next_plan.strip()) > PLAN_MAX:
        raise FollowUpError(_("下次计划不能超过 %(n)s 字。", n=PLAN_MAX), "next_plan")
    if next_contact_at is None:
        raise FollowUpError(_("请选择下次联系时间。"), "next_contact_at")
    if next_contact_at <= now:
        raise FollowUpError(_("下次联系时间必须晚于现在。"), "next_contact_at")
    if next_contact_at > now + reminders.MAX_AHEAD:
        raise FollowUpError(_("下次联系时间不能超过一年之后。"), "next_contact_at")


def record_followup(
    session: Session,
    customer: Customer,
    user: User,
    *,
    channel: str,
    content: str,
    goal_met: bool,
    next_plan: str,
    next_contact_at: datetime,
    now: datetime,
    answered_reminder_id: int | None = None,
    confirm_over_cap: bool | None = None,
) -> FollowUp:
    """Record a real touch on ``customer`` by ``user`` and apply its effects (see the module docstring).

    Raises ``FollowUpError`` (or a subclass) and changes nothing when refused. Does not commit.
    """
    if not can_edit_customer(session, user, customer):  # permission before the input
        raise FollowUpForbidden(_("只有客户负责人、其主管或管理员可以记录跟进。"))
    validate(channel, content, next_plan, next_contact_at, now)
    over_cap = _check_frequency(session, customer, user, now, confirm_over_cap)
    answered = reminders.answerable(session, user, customer, answered_reminder_id)
    followup = FollowUp(
        customer_id=customer.id,
        user_id=user.id,
        at=now,
        channel=channel,
        content=content.strip(),
        goal_met=bool(goal_met),
        next_plan=next_plan.strip(),
        next_contact_at=next_contact_at,
        holding_no=customer.holding_no,
        score_at=customer.score,
        stage_id=customer.stage_id,
        answered_reminder_id=answered.id if answered else None,
        over_cap=over_cap,
    )
    session.add(followup)
    in_holding = customer.owner_id is not None
    values = {"last_followup_at": now, "updated_at": now}
    if in_holding:
        values["holding_followups"] = Customer.holding_followups + 1
        if customer.first_contact_at is None:
            values["first_contact_at"] = now
    session.execute(
        update(Customer)
        .where(Customer.id == customer.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.refresh(customer)
    reminders.close_for_followup(session, customer, user, now, answered)
    reminders.create_next_contact(session, followup, customer, now)
    signals.followup_saved.send(followup, session=session, now=now)
    return followup


def recompute_touches(session: Session, customer: Customer, now: datetime) -> None:
    """Rebuild the customer's touch clocks from its genuine follow-ups (after a spot check changed one):
    last real follow-up over all time; first contact and count within the current holding."""
    genuine = (FollowUp.customer_id == customer.id, FollowUp.is_fake.is_(False))
    last = session.scalar(select(func.max(FollowUp.at)).where(*genuine))
    values: dict = {"last_followup_at": last, "updated_at": now}
    if customer.owner_id is not None:
        holding = [*genuine, FollowUp.holding_no == customer.holding_no]
        if customer.claimed_at is not None:
            holding.append(FollowUp.at >= customer.claimed_at)
        first, count = session.execute(select(func.min(FollowUp.at), func.count()).where(*holding)).one()
        values |= {"first_contact_at": first, "holding_followups": count or 0}
    session.execute(
        update(Customer)
        .where(Customer.id == customer.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.refresh(customer)
