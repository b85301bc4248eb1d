"""The dashboard filter (period, team, pool, channel) and who the viewer may see. One place for both rules.

A period is a range of whole local days [start, end] in the team time zone (``CRM_TIMEZONE``); queries use
the UTC instants [start 00:00, end+1 00:00). Managers see their team only, whatever they ask for; a team
they do not manage is refused like an unknown one (no hint that it exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm import clock
from crm.inputguard import parse_id
from crm.models import Pool, Role, Team, User
from crm.permissions import team_member_ids

MAX_DAYS = 366
PRESETS = ("week", "month", "30d")


class ReportInputError(ValueError):
    """Bad filter input: ``errors`` maps a field name to a Chinese message. Nothing is computed."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass
class ReportFilter:
    """What a dashboard shows: the period, the people (None = everyone), the pool and the channel."""

    start: date
    end: date  # inclusive
    tz: str
    user_ids: frozenset[int] | None
    team_id: int | None = None
    pool_id: int | None = None
    channel: str | None = None
    preset: str | None = None
    args: dict = field(default_factory=dict)

    @property
    def start_utc(self) -> datetime:
        return clock.day_bounds(self.start, self.tz)[0]

    @property
    def end_utc(self) -> datetime:
        return clock.day_bounds(self.end, self.tz)[1]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def offset(self) -> int:
        """Seconds to add to a UTC timestamp for local time (the zone's offset at the period start)."""
        start = self.start_utc
        return int(clock.zone(self.tz).utcoffset(start.replace(tzinfo=None)).total_seconds())

    def shifted(self, start: date, end: date) -> ReportFilter:
        """The same filter over another period (the weekly review compares two weeks)."""
        return ReportFilter(start, end, self.tz, self.user_ids, self.team_id, self.pool_id, self.channel)


def preset_period(preset: str, today: date) -> tuple[date, date]:
    """本周 (Monday to today), 本月 (the 1st to today), 近30天 (the 30 days ending today)."""
    if preset == "week":
        return today - timedelta(days=today.weekday()), today
    if preset == "month":
        return today.replace(day=1), today
    return today - timedelta(days=29), today


def _parse_date(value: str, label: str, errors: dict, key: str) -> date | None:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors[key] = _("%(f)s不是有效的日期 (应为 YYYY-MM-DD): %(v)s", f=label, v=value[:20])
        return None


def _parse_id(value: str | None, label: str, errors: dict, key: str) -> int | None:
    if value in (None, "", "all"):
        return None
    parsed = parse_id(value)
    if parsed is None:
        errors[key] = _("未知的%(f)s。", f=label)
    return parsed


def parse_filter(session: Session, args: dict, viewer: User, now: datetime) -> ReportFilter:
    """Validate query arguments into a ``ReportFilter`` scoped to what ``viewer`` may see.

    Raises ``ReportInputError`` with every problem found; nothing is computed then.
    """
    errors: dict[str, str] = {}
    tz = clock.default_tz_name()
    today = clock.local_today(tz, now)
    preset = args.get("preset") or None
    raw_start, raw_end = (args.get("start") or "").strip(), (args.get("end") or "").strip()
    if preset is not None and preset not in PRESETS:
        errors["preset"] = _("未知的时间范围。")
        preset = None
    if raw_start or raw_end:
        start = _parse_date(raw_start, _("开始日期"), errors, "start") if raw_start else None
        end = _parse_date(raw_end, _("结束日期"), errors, "end") if raw_end else today
        if not raw_start and "start" not in errors:
            errors["start"] = _("请填写开始日期。")
        preset = None
    else:
        start, end = preset_period(preset or "30d", today)
        preset = preset or "30d"
    if start and end and "start" not in errors and "end" not in errors:
        if end < start:
            errors["end"] = _("结束日期不能早于开始日期。")
        elif (end - start).days + 1 > MAX_DAYS:
            errors["end"] = _("时间范围最长 %(n)s 天。", n=MAX_DAYS)

    team_id = _parse_id(args.get("team"), _("团队"), errors, "team")
    pool_id = _parse_id(args.get("pool"), _("公海池"), errors, "pool")
    channel = (args.get("channel") or "").strip()[:60] or None

    if team_id is not None and team_id not in dict(team_choices(session, viewer)):
        errors["team"] = _("未知的团队。")
    if pool_id is not None and not session.scalar(
        select(Pool.id).where(Pool.id == pool_id, Pool.deleted_at.is_(None))
    ):
        errors["pool"] = _("未知的公海池。")
    if errors:
        raise ReportInputError(errors)

    user_ids: set[int] | None = None
    if viewer.role != Role.ADMIN:
        user_ids = team_member_ids(session, viewer)
    if team_id is not None:
        members = set(session.scalars(select(User.id).where(User.team_id == team_id)))
        team_manager = session.scalar(select(Team.manager_id).where(Team.id == team_id))
        if team_manager is not None:
            members.add(team_manager)
        user_ids = members if user_ids is None else user_ids & members
    cleaned = {"start": start.isoformat(), "end": end.isoformat(), "team": team_id or "",
               "pool": pool_id or "", "channel": channel or ""}  # fmt: skip
    if preset:
        cleaned = {"preset": preset, "team": team_id or "", "pool": pool_id or "", "channel": channel or ""}
    return ReportFilter(
        start=start,
        end=end,
        tz=tz,
        user_ids=frozenset(user_ids) if user_ids is not None else None,
        team_id=team_id,
        pool_id=pool_id,
        channel=channel,
        preset=preset,
        args={k: v for k, v in cleaned.items() if v != ""},
    )


def team_choices(session: Session, viewer: User) -> list[tuple[int, str]]:
    """Teams ``viewer`` may filter by: all for admins; for a manager the teams they manage or belong to."""
    query = select(Team.id, Team.name).order_by(Team.name)
    if viewer.role != Role.ADMIN:
        from sqlalchemy import or_

        query = query.where(or_(Team.manager_id == viewer.id, Team.id == (viewer.team_id or -1)))
    return [(tid, name) for tid, name in session.execute(query)]


def pool_choices(session: Session) -> list[tuple[int, str]]:
    return list(
        session.execute(select(Pool.id, Pool.name).where(Pool.deleted_at.is_(None)).order_by(Pool.id))
    )


def week_bounds(day: date) -> tuple[date, date]:
    """Monday–Sunday of the week containing ``day``."""
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
