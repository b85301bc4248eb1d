"""Follow-ups (跟进记录), reminders (跟进提醒) with per-channel deliveries, and spot checks (抽查)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db

from .types import JSONType, UTCDateTime


class Channel:
    """How a follow-up happened."""

    PHONE = "phone"
    WECHAT = "wechat"
    VISIT = "visit"
    EMAIL = "email"
    MEETING = "meeting"
    OTHER = "other"
    ALL = (PHONE, WECHAT, VISIT, EMAIL, MEETING, OTHER)
    LABELS = {PHONE: "电话", WECHAT: "微信", VISIT: "拜访", EMAIL: "邮件", MEETING: "会议", OTHER: "其他"}


class FollowUp(db.Model):
    """跟进记录: a real touch. Only follow-ups that are not marked fake reset recycle clocks."""

    __tablename__ = "followups"
    __table_args__ = (
        Index("ix_followups_customer_at", "customer_id", "at"),
        # is_fake, score_at and customer_id carried for the dashboards (crm/reports): per-rep counts, hot
        # share and the heatmaps over a period are index-only scans (SQLite skip-scans user_id for admins).
        Index("ix_followups_user_at", "user_id", "at", "is_fake", "score_at", "customer_id"),
        # Carries what the dashboards read over a period (crm/reports), so their scans are index-only.
        Index("ix_followups_at", "at", "user_id", "is_fake", "score_at", "customer_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    goal_met: Mapped[bool] = mapped_column(Boolean, default=False)
    next_plan: Mapped[str] = mapped_column(Text)
    next_contact_at: Mapped[datetime] = mapped_column(UTCDateTime)
    holding_no: Mapped[int] = mapped_column(Integer, default=0)
    # Score and stage at the time, for "share of follow-ups on hot customers" reports.
    score_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"), nullable=True)
    # Set by a spot check; a fake follow-up no longer counts as a real touch.
    is_fake: Mapped[bool] = mapped_column(Boolean, default=False)
    # The reminder this follow-up answered (closed on save).
    answered_reminder_id: Mapped[int | None] = mapped_column(
        ForeignKey("reminders.id", use_alter=True), nullable=True
    )
    # Saved past the contact-frequency cap (warn mode) after the rep confirmed, or by a caller that
    # does not ask (managers see these).
    over_cap: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    customer = relationship("Customer")
    user = relationship("User")


class ReminderKind:
    NEXT_CONTACT = "next_contact"  # from a follow-up's next-contact time
    CADENCE = "cadence"  # grade cadence (A 7 / B 14 / C 30 days)
    NEW_CUSTOMER = "new_customer"  # first contact within 3 days of arrival or claim
    CUSTOM = "custom"  # set by the rep
    RECYCLE_WARNING = "recycle_warning"
    RECYCLE_ESCALATION = "recycle_escalation"
    OVERDUE_ESCALATION = "overdue_escalation"
    HOT = "hot"  # score crossed the hot threshold
    DUPLICATE = "duplicate"  # a duplicate lead arrived for an owned customer (撞单)
    EXTENSION = "extension"  # an extension request to decide, or its decision
    SYSTEM = "system"  # digests, import results, etc.
    STALLED = "stalled"  # hot or grade A with no stage progress (高意向未推进)
    SPOT_CHECK = "spot_check"  # a manager's daily spot-check sample is ready
    WEEKLY_DIGEST = "weekly_digest"  # 上周公海复盘 for managers and admins (crm/reports/review.py)
    RECYCLED = "recycled"  # the previous owner: a customer was recycled away, and why
    ASSIGNED = "assigned"  # the receiver: customers assigned / transferred / auto-assigned / handed over
    ALL = (
        NEXT_CONTACT, CADENCE, NEW_CUSTOMER, CUSTOM, RECYCLE_WARNING, RECYCLE_ESCALATION,
        OVERDUE_ESCALATION, HOT, DUPLICATE, EXTENSION, SYSTEM, STALLED, SPOT_CHECK, WEEKLY_DIGEST,
        RECYCLED, ASSIGNED,
    )  # fmt: skip
    LABELS = {
        NEXT_CONTACT: "计划联系", CADENCE: "定期回访", NEW_CUSTOMER: "新客户首次联系", CUSTOM: "自定义提醒",
        RECYCLE_WARNING: "回收预警", RECYCLE_ESCALATION: "回收升级", OVERDUE_ESCALATION: "逾期升级",
        HOT: "高分客户", DUPLICATE: "撞单", EXTENSION: "延期申请", SYSTEM: "系统通知",
        STALLED: "高意向未推进", SPOT_CHECK: "跟进抽查", WEEKLY_DIGEST: "公海周报",
        RECYCLED: "客户被回收", ASSIGNED: "新分配客户",
    }  # fmt: skip


class ReminderStatus:
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"
    ALL = (OPEN, DONE, CANCELLED)


class Reminder(db.Model):
    """A thing a user should do or know at ``due_at``. ``unique_key`` makes generation idempotent.

    Snoozing moves ``due_at`` (the original time is kept in ``original_due_at``).
    """

    __tablename__ = "reminders"
    __table_args__ = (
        Index("ix_reminders_user_status_due", "user_id", "status", "due_at"),
        Index("ix_reminders_status_due", "status", "due_at"),
        Index("ix_reminders_customer_status", "customer_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(24))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When to notify and start showing it (default: ``due_at``). A new customer's first-contact
    # reminder shows from the claim until its deadline ``due_at``; a snooze moves both.
    notify_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Notification round: a snooze after the reminder was sent starts a new round, so it is
    # delivered again at the new time (each round exactly once per channel).
    round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # For reminders a manager gets about a rep's customer (overdue escalation): that rep.
    subject_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # Who created it (custom reminders); empty for generated ones.
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    original_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default=ReminderStatus.OPEN)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unique_key: Mapped[str] = mapped_column(String(160), unique=True)
    source_followup_id: Mapped[int | None] = mapped_column(ForeignKey("followups.id"), nullable=True)
    # Overdue escalation to the manager happened (once).
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Deliveries for this reminder have been created (dispatch fan-out happened).
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user = relationship("User", foreign_keys=[user_id])
    subject_user = relationship("User", foreign_keys=[subject_user_id])
    customer = relationship("Customer")


# The dispatch fan-out only looks at open reminders not yet fanned out, by their notify time: keep that
# scan small however many reminders history holds.
Index(
    "ix_reminders_unfanned",
    func.coalesce(Reminder.notify_at, Reminder.due_at),
    postgresql_where=text("fanned_out_at IS NULL AND status = 'open'"),
    sqlite_where=text("fanned_out_at IS NULL AND status = 'open'"),
)


class DeliveryStatus:
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"  # will retry at next_attempt_at
    GAVE_UP = "gave_up"
    SKIPPED = "skipped"  # channel not configured / disabled for the user
    ALL = (PENDING, SENDING, SENT, FAILED, GAVE_UP, SKIPPED)


class ReminderDelivery(db.Model):
    """One reminder on one channel (in_app / email / dingtalk / wecom / webhook): sent exactly once.

    A worker claims rows with a conditional update (status pending/failed → sending, ``claim_token``)
    before sending; the unique (reminder, channel, round) key forbids a second row. ``round`` is the
    reminder's notification round (0 unless it was snoozed after being sent).
    """

    __tablename__ = "reminder_deliveries"
    __table_args__ = (
        UniqueConstraint("reminder_id", "channel", "round"),
        # Claims a worker holds (stuck-claim recovery looks at old ones).
        Index(
            "ix_reminder_deliveries_sending",
            "claimed_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        # Failed and given-up deliveries (the admin page).
        Index(
            "ix_reminder_deliveries_problems",
            "status",
            "id",
            postgresql_where=text("status IN ('failed', 'gave_up')"),
            sqlite_where=text("status IN ('failed', 'gave_up')"),
        ),
        # What workers claim next: only rows waiting to be sent, in due order (the partial index keeps
        # the claim an ordered index scan that stops after one batch, however large the backlog).
        Index(
            "ix_reminder_deliveries_claimable",
            "next_attempt_at",
            "id",
            postgresql_where=text("status IN ('pending', 'failed')"),
            sqlite_where=text("status IN ('pending', 'failed')"),
        ),
        # In-app notifications only (push rows need no user index): the list, newest first, and the badge.
        Index(
            "ix_reminder_deliveries_in_app",
            "user_id",
            "created_at",
            postgresql_where=text("channel = 'in_app'"),
            sqlite_where=text("channel = 'in_app'"),
        ),
        Index(
            "ix_reminder_deliveries_unread",
            "user_id",
            postgresql_where=text("channel = 'in_app' AND read_at IS NULL"),
            sqlite_where=text("channel = 'in_app' AND read_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reminder_id: Mapped[int] = mapped_column(ForeignKey("reminders.id"))
    # The reminder's user, copied so the badge count needs no join.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(12), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # in-app: seen
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Where the last attempt went (``EndpointBackoff.key``: "smtp" or "endpoint:<id>"), for the admin filter.
    endpoint: Mapped[str | None] = mapped_column(String(40), nullable=True)

    reminder = relationship("Reminder")


class EndpointBackoff(db.Model):
    """A delivery endpoint that could not be reached (a webhook/robot endpoint, or SMTP), backing off as a
    whole: no delivery to it is tried before ``retry_at`` (nor charged an attempt); ``failures`` in a row
    double the wait. Deleted by the first send that gets through."""

    __tablename__ = "endpoint_backoffs"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SpotCheck(db.Model):
    """抽查: a manager's verdict on one sampled follow-up (pending / genuine / fake)."""

    __tablename__ = "spot_checks"
    __table_args__ = (Index("ix_spot_checks_manager_day", "manager_id", "sampled_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    followup_id: Mapped[int] = mapped_column(ForeignKey("followups.id"), unique=True)
    manager_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    sampled_on: Mapped[date] = mapped_column(Date)
    verdict: Mapped[str] = mapped_column(String(10), default="pending")
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    followup = relationship("FollowUp")


class WebhookEndpoint(db.Model):
    """A robot or webhook reminders can be delivered to: DingTalk (signed secret), WeCom, generic JSON.

    ``team_id`` empty means it serves everyone; otherwise the team's members.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # dingtalk / wecom / webhook
    name: Mapped[str] = mapped_column(String(60))
    url: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    extra: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
