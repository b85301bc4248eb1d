"""The one clock of the application (SPEC §9).

Business code calls ``clock.now()`` through the module, never ``datetime.now()``, so tests and the CLI
can run "as of" any instant with ``clock.frozen(at)``. Times are stored in UTC; days are counted in the
team's time zone (default ``CRM_TIMEZONE``, Asia/Shanghai).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

_DEFAULT_TZ_NAME = "Asia/Shanghai"
_frozen = threading.local()
_global_frozen: list[datetime] = []


def now() -> datetime:
    """The current instant, timezone-aware UTC (or the frozen instant inside ``frozen``)."""
    pinned = getattr(_frozen, "at", None)
    if pinned is not None:
        return pinned
    if _global_frozen:
        return _global_frozen[-1]
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive input is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@contextlib.contextmanager
def frozen(at: datetime, *, all_threads: bool = True) -> Iterator[datetime]:
    """Pin ``now()`` to ``at`` (naive means UTC) for the duration of the block.

    By default the pin is seen by every thread (tests that race threads at one instant); pass
    ``all_threads=False`` to pin only the calling thread (a web request handled "as of" a time).
    """
    at = as_utc(at)
    if all_threads:
        _global_frozen.append(at)
        try:
            yield at
        finally:
            _global_frozen.pop()
    else:
        previous = getattr(_frozen, "at", None)
        _frozen.at = at
        try:
            yield at
        finally:
            _frozen.at = previous


def default_tz_name() -> str:
    """The configured team time zone name (``CRM_TIMEZONE``)."""
    try:
        from flask import current_app

        return current_app.config.get("CRM_TIMEZONE", _DEFAULT_TZ_NAME)
    except RuntimeError:
        import os

        return os.environ.get("CRM_TIMEZONE", _DEFAULT_TZ_NAME)


def zone(name: str | None = None) -> tzinfo:
    """The ``ZoneInfo`` for ``name`` or the configured default."""
    return ZoneInfo(name or default_tz_name())


def local(value: datetime, tz: str | None = None) -> datetime:
    """``value`` shown in the team's time zone."""
    return as_utc(value).astimezone(zone(tz))


def local_today(tz: str | None = None, at: datetime | None = None) -> date:
    """The calendar date it is in the team's time zone at ``at`` (default: now)."""
    return local(at or now(), tz).date()


def day_bounds(day: date, tz: str | None = None) -> tuple[datetime, datetime]:
    """UTC instants [start, end) of the local calendar ``day``."""
    z = zone(tz)
    start = datetime.combine(day, time.min, tzinfo=z)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=z)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_day_bounds(tz: str | None = None, at: datetime | None = None) -> tuple[datetime, datetime]:
    """UTC instants [start, end) of the local day containing ``at`` (default: now)."""
    return day_bounds(local_today(tz, at), tz)


def at_local(day: date, hour: int, minute: int = 0, tz: str | None = None) -> datetime:
    """The UTC instant of ``hour:minute`` local time on ``day``."""
    return datetime.combine(day, time(hour, minute), tzinfo=zone(tz)).astimezone(UTC)


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 timestamp; one without an offset is read in the team's time zone.

    Raises ``ValueError`` with a readable message for anything else.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"不是有效的 ISO 8601 时间: {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone())
    return value.astimezone(UTC)


def from_local(value: datetime | None, tz: str | None = None) -> datetime | None:
    """A naive wall-clock time typed by a user in the team's time zone → aware UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz))
    return value.astimezone(UTC)


def to_local_naive(value: datetime | None, tz: str | None = None) -> datetime | None:
    """Aware UTC → naive wall-clock time in the team's time zone (to pre-fill a form field)."""
    if value is None:
        return None
    return local(value, tz).replace(tzinfo=None)


# ---------------------------------------------------------------- working days (工作日)
#
# Pure functions over a holiday calendar: ``holidays`` maps a local date to ``is_workday`` (False = a public
# holiday, True = a 调休 make-up workday); dates not in it follow the Mon–Fri week.
#
# "N working days" is N × 24 h of *working-day time*: time that falls on local working days counts, time on
# weekends and holidays does not. So Friday 15:00 + 1 working day = Monday 15:00, and Saturday 10:00 + 1
# working day = Tuesday 00:00 (counting starts when the next working day starts). Both directions are
# monotone, which is what lets set-based SQL compare stored instants against one cutoff:
# ``add_working(a, L) <= now  ⟺  a <= subtract_working(now, L)``.

_MAX_CALENDAR_DAYS = 20 * 366  # a guard against a calendar without working days


def is_workday(day: date, holidays: Mapping[date, bool]) -> bool:
    """True when ``day`` is a working day: a 调休 workday, or a Mon–Fri that is not a holiday."""
    flag = holidays.get(day)
    if flag is not None:
        return bool(flag)
    return day.weekday() < 5


def add_working(
    start: datetime, length: timedelta, holidays: Mapping[date, bool], tz: str | None = None
) -> datetime:
    """The first instant at which ``length`` of working-day time has passed since ``start``."""
    t = as_utc(start)
    remaining = length
    if remaining <= timedelta(0):
        return t
    day = local(t, tz).date()
    for _ in range(_MAX_CALENDAR_DAYS):
        day_start, day_end = day_bounds(day, tz)
        if is_workday(day, holidays):
            lo = max(t, day_start)
            available = day_end - lo
            if available >= remaining:
                return lo + remaining
            remaining -= available
        day += timedelta(days=1)
    raise ValueError("holiday calendar has no working days in range")


def subtract_working(
    end: datetime, length: timedelta, holidays: Mapping[date, bool], tz: str | None = None
) -> datetime:
    """The latest instant ``a`` such that at least ``length`` of working-day time lies in ``[a, end)``.

    This is the cutoff for "due by ``end``": ``add_working(a, length) <= end`` exactly when ``a <= cutoff``.
    """
    t = as_utc(end)
    remaining = length
    if remaining <= timedelta(0):
        return t
    day = local(t, tz).date()
    for _ in range(_MAX_CALENDAR_DAYS):
        day_start, day_end = day_bounds(day, tz)
        if is_workday(day, holidays):
            hi = min(t, day_end)
            available = hi - day_start
            if available >= remaining:
                return hi - remaining
            if available > timedelta(0):
                remaining -= available
        day -= timedelta(days=1)
    raise ValueError("holiday calendar has no working days in range")


def working_time_between(
    start: datetime, end: datetime, holidays: Mapping[date, bool], tz: str | None = None
) -> timedelta:
    """Working-day time in ``[start, end)`` (zero when ``end <= start``)."""
    a, b = as_utc(start), as_utc(end)
    total = timedelta(0)
    if b <= a:
        return total
    day = local(a, tz).date()
    while True:
        day_start, day_end = day_bounds(day, tz)
        if day_start >= b:
            return total
        if is_workday(day, holidays):
            lo, hi = max(a, day_start), min(b, day_end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
