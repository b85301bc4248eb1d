"""The holiday calendar (节假日, with 调休 make-up workdays) and the ``recycle`` settings section.

Seeded with mainland China's public holidays from the 国务院办公厅 notices. 2026: 国办发明电〔2025〕
(published 2025-11-04). 2027: the notice is published around November 2026 and was not available when
this was written, so only the statutory days of 《全国年节及纪念日放假办法》 (2024 revision) are seeded —
their 调休 arrangement is unknown; admins complete it on the holiday page when the notice is out.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crm.dbutil import insert_ignore
from crm.models import Holiday
from crm.settings import store


def _span(first: date, last: date, name: str) -> list[tuple[date, bool, str]]:
    days = (last - first).days
    return [(first + timedelta(days=i), False, name) for i in range(days + 1)]


def _work(day: date, name: str) -> tuple[date, bool, str]:
    return (day, True, name)


# 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04)
HOLIDAYS_2026 = [
    *_span(date(2026, 1, 1), date(2026, 1, 3), "元旦"),
    _work(date(2026, 1, 4), "元旦调休上班"),
    *_span(date(2026, 2, 15), date(2026, 2, 23), "春节"),
    _work(date(2026, 2, 14), "春节调休上班"),
    _work(date(2026, 2, 28), "春节调休上班"),
    *_span(date(2026, 4, 4), date(2026, 4, 6), "清明节"),
    *_span(date(2026, 5, 1), date(2026, 5, 5), "劳动节"),
    _work(date(2026, 5, 9), "劳动节调休上班"),
    *_span(date(2026, 6, 19), date(2026, 6, 21), "端午节"),
    *_span(date(2026, 9, 25), date(2026, 9, 27), "中秋节"),
    *_span(date(2026, 10, 1), date(2026, 10, 7), "国庆节"),
    _work(date(2026, 9, 20), "国庆节调休上班"),
    _work(date(2026, 10, 10), "国庆节调休上班"),
]

# 2027: statutory days only (放假办法 2024: 元旦 1, 春节 4 = 除夕–初三, 清明 1, 劳动节 2, 端午 1, 中秋 1,
# 国庆 3). Lunar dates: 春节 2027-02-06, 清明 04-05, 端午 06-09, 中秋 09-15. 调休 awaits the 2027 notice.
HOLIDAYS_2027 = [
    (date(2027, 1, 1), False, "元旦"),
    *_span(date(2027, 2, 5), date(2027, 2, 8), "春节"),
    (date(2027, 4, 5), False, "清明节"),
    *_span(date(2027, 5, 1), date(2027, 5, 2), "劳动节"),
    (date(2027, 6, 9), False, "端午节"),
    (date(2027, 9, 15), False, "中秋节"),
    *_span(date(2027, 10, 1), date(2027, 10, 3), "国庆节"),
]

SEED = HOLIDAYS_2026 + HOLIDAYS_2027


def seed_holidays(session: Session, now: datetime) -> None:
    """``EXTRA_DEFAULTS`` hook: insert the seeded days that are missing (never overwrites admin edits)."""
    if session.scalar(select(Holiday.id).limit(1)) is not None:
        return
    rows = [{"day": d, "is_workday": w, "name": n} for d, w, n in SEED]
    session.execute(insert_ignore(session, Holiday.__table__, ["day"]), rows)


def holiday_map(session: Session) -> dict[date, bool]:
    """Every calendar entry as ``{day: is_workday}`` (what ``clock.add_working`` and friends take)."""
    return dict(session.execute(select(Holiday.day, Holiday.is_workday)).all())


def list_holidays(session: Session, year: int | None = None) -> list[Holiday]:
    query = select(Holiday).order_by(Holiday.day)
    if year:
        query = query.where(Holiday.day >= date(year, 1, 1), Holiday.day <= date(year, 12, 31))
    return list(session.scalars(query))


class HolidayError(ValueError):
    """A calendar that cannot be saved; ``errors`` lists ``(line or index, message)``."""

    def __init__(self, errors: list[tuple[int, str]]):
        super().__init__("; ".join(f"{where}: {msg}" for where, msg in errors))
        self.errors = errors


_TRUE = {"1", "true", "yes", "y", "班", "上班", "workday", "work"}
_FALSE = {"0", "false", "no", "n", "休", "放假", "holiday", "off", ""}


def _parse_flag(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def clean_entries(entries: list[dict]) -> list[tuple[date, bool, str]]:
    """Validate ``[{"date": "2026-10-01", "is_workday": false, "name": "国庆节"}, …]``; all or nothing."""
    errors: list[tuple[int, str]] = []
    seen: dict[date, int] = {}
    cleaned: list[tuple[date, bool, str]] = []
    if not isinstance(entries, list):
        raise HolidayError([(0, _("节假日必须是列表。"))])
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            errors.append((index, _("第 %(n)s 项不是对象。", n=index)))
            continue
        raw = str(entry.get("date") or entry.get("day") or "").strip()
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            errors.append(
                (index, _("第 %(n)s 项日期无效: %(value)s (应为 YYYY-MM-DD)", n=index, value=raw or "空"))
            )
            continue
        flag = _parse_flag(entry.get("is_workday", False))
        if flag is None:
            errors.append((index, _("第 %(n)s 项 is_workday 只能是 true/false (班/休)。", n=index)))
            continue
        name = str(entry.get("name") or "").strip()
        if len(name) > 40:
            errors.append((index, _("第 %(n)s 项名称不超过 40 字。", n=index)))
            continue
        if day in seen:
            errors.append(
                (index, _("第 %(n)s 项与第 %(m)s 项日期重复: %(day)s", n=index, m=seen[day], day=day))
            )
            continue
        if flag and day.weekday() < 5:
            errors.append((index, _("第 %(n)s 项 %(day)s 是工作日,不需要标为调休上班。", n=index, day=day)))
            continue
        seen[day] = index
        cleaned.append((day, flag, name))
    if errors:
        raise HolidayError(errors)
    return cleaned


def parse_holiday_text(text: str) -> list[dict]:
    """The holiday file format of the admin page: one day per line, ``2026-10-01,休,国庆节`` or
    ``2026-10-10,班,国庆节调休``; blank lines and ``#`` comments are skipped. Raises ``HolidayError``."""
    entries, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace(",", ",").replace("\t", ",").split(",")]
        raw_day = parts[0]
        try:
            date.fromisoformat(raw_day)
        except ValueError:
            errors.append(
                (number, _("第 %(n)s 行日期无效: %(value)s (应为 YYYY-MM-DD)", n=number, value=raw_day))
            )
            continue
        flag = _parse_flag(parts[1] if len(parts) > 1 else "休")
        if flag is None:
            errors.append((number, _("第 %(n)s 行第二列只能是「休」或「班」。", n=number)))
            continue
        entries.append({"date": raw_day, "is_workday": flag, "name": parts[2] if len(parts) > 2 else ""})
    if errors:
        raise HolidayError(errors)
    return entries


def replace_holidays(session: Session, entries: list[dict], user, now: datetime) -> list[Holiday]:
    """Replace the whole calendar (validated first: a bad date saves nothing); audited. Does not commit."""
    cleaned = clean_entries(entries)
    before = [h.day.isoformat() + ("+" if h.is_workday else "") for h in list_holidays(session)]
    session.execute(delete(Holiday))
    session.add_all(Holiday(day=d, is_workday=w, name=n) for d, w, n in cleaned)
    session.flush()
    after = [d.isoformat() + ("+" if w else "") for d, w, _n in cleaned]
    store.audit(
        session, "holidays", user, now, before, after,
        _("修改了节假日日历: %(n)s 天 (原 %(m)s 天)", n=len(cleaned), m=len(before)),
    )  # fmt: skip
    return list_holidays(session)


def _validate_recycle_settings(data: dict) -> dict:
    errors = {}
    limits = {
        "protect_days": (0, 3650, _("成交保护期需在 0–3650 天之间。")),
        "hard_threshold": (2, 100, _("高难度回收次数需在 2–100 之间。")),
        "hard_window_days": (1, 3650, _("高难度统计窗口需在 1–3650 天之间。")),
        "max_extension_days": (1, 365, _("单次持有最多可延期天数需在 1–365 之间。")),
    }
    for key, (lo, hi, message) in limits.items():
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            errors[key] = message
    if errors:
        raise store.SettingsError(errors)
    return {key: data[key] for key in limits}


RECYCLE_DEFAULTS = {
    "protect_days": 30,  # a deal won within this many days protects the customer
    "hard_threshold": 3,  # recycled this many times …
    "hard_window_days": 90,  # … within this window → 高难度, senior-only
    "max_extension_days": 30,  # approved extensions per holding, in total
}

store.register("recycle", "回收规则", RECYCLE_DEFAULTS, _validate_recycle_settings)
