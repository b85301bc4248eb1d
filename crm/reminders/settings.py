"""Settings sections of follow-ups and reminders (served by ``GET/PUT /api/v1/settings/<section>`` too):

- ``cadence``: 回访节奏 — days between touches by grade, first contact of new customers, the
  高意向未推进 threshold, the follow-up form's default next-contact time, overdue escalation.
- ``frequency_caps``: 防骚扰 — contacts per customer per day / per 7 days, warn or block.
- ``spot_checks``: 抽查 — how many follow-ups a manager gets each day.
- ``dispatch``: 发送 — retries, backoff, the claim timeout and the app's public address for links.
- ``smtp``: 邮件服务器. The password is kept apart (``smtp_secret`` row, never returned by any API).
"""

from __future__ import annotations

import re

from flask_babel import gettext as _
from sqlalchemy.orm import Session

from crm.models import Setting
from crm.settings import store

CADENCE_DEFAULTS = {
    "grade_days": {"A": 7, "B": 14, "C": 30},
    "new_customer_days": 3,
    "stall_days": 14,
    "default_next_days": 3,
    "default_hour": 10,
    "overdue_escalation_hours": 24,
}
FREQUENCY_DEFAULTS = {"per_day": 2, "per_week": 5, "mode": "warn"}
SPOT_CHECK_DEFAULTS = {"enabled": True, "daily_sample": 5}
DISPATCH_DEFAULTS = {
    "max_attempts": 6,
    "backoff_seconds": 60,
    "backoff_max_seconds": 3600,
    "claim_timeout_seconds": 300,
    "app_url": "",
}
SMTP_DEFAULTS = {
    "enabled": False,
    "host": "",
    "port": 25,
    "security": "none",  # none / starttls / ssl
    "username": "",
    "from_addr": "",
    "from_name": "公海 CRM",
    "timeout": 10,
}
SMTP_SECRET_ROW = "smtp_secret"


def _int(data: dict, key: str, low: int, high: int, errors: dict, label: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[key] = _("%(label)s需在 %(low)s–%(high)s 之间。", label=label, low=low, high=high)
        return low
    return value


def validate_cadence(data: dict) -> dict:
    errors: dict[str, str] = {}
    grades = data.get("grade_days")
    clean_grades = {}
    if not isinstance(grades, dict) or set(grades) != {"A", "B", "C"}:
        errors["grade_days"] = _("请为 A、B、C 三个等级都设置回访天数。")
    else:
        for grade in ("A", "B", "C"):
            value = grades[grade]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 365:
                errors["grade_days"] = _("回访天数需在 1–365 之间。")
            clean_grades[grade] = value
    out = {
        "grade_days": clean_grades,
        "new_customer_days": _int(data, "new_customer_days", 1, 30, errors, _("新客户首次联系天数")),
        "stall_days": _int(data, "stall_days", 1, 365, errors, _("高意向未推进天数")),
        "default_next_days": _int(data, "default_next_days", 1, 60, errors, _("默认下次联系天数")),
        "default_hour": _int(data, "default_hour", 0, 23, errors, _("默认联系时刻")),
        "overdue_escalation_hours": _int(
            data, "overdue_escalation_hours", 1, 24 * 30, errors, _("逾期升级小时数")
        ),
    }
    if errors:
        raise store.SettingsError(errors)
    return out


def validate_frequency(data: dict) -> dict:
    errors: dict[str, str] = {}
    out = {
        "per_day": _int(data, "per_day", 1, 50, errors, _("每日上限")),
        "per_week": _int(data, "per_week", 1, 200, errors, _("每周上限")),
        "mode": data.get("mode"),
    }
    if out["mode"] not in ("warn", "block"):
        errors["mode"] = _("超出上限时的处理方式只能是 warn(提醒)或 block(禁止)。")
    if not errors and out["per_week"] < out["per_day"]:
        errors["per_week"] = _("每周上限不能小于每日上限。")
    if errors:
        raise store.SettingsError(errors)
    return out


def validate_spot_checks(data: dict) -> dict:
    errors: dict[str, str] = {}
    out = {
        "enabled": bool(data.get("enabled")),
        "daily_sample": _int(data, "daily_sample", 1, 100, errors, _("每日抽查条数")),
    }
    if errors:
        raise store.SettingsError(errors)
    return out


def validate_dispatch(data: dict) -> dict:
    errors: dict[str, str] = {}
    out = {
        "max_attempts": _int(data, "max_attempts", 1, 20, errors, _("最多尝试次数")),
        "backoff_seconds": _int(data, "backoff_seconds", 1, 3600, errors, _("重试间隔")),
        "backoff_max_seconds": _int(data, "backoff_max_seconds", 1, 86400, errors, _("最长重试间隔")),
        "claim_timeout_seconds": _int(data, "claim_timeout_seconds", 30, 3600, errors, _("发送超时")),
        "app_url": str(data.get("app_url") or "").strip().rstrip("/"),
    }
    if out["app_url"] and not re.match(r"^https?://[^\s/]+", out["app_url"]):
        errors["app_url"] = _("系统访问地址需以 http:// 或 https:// 开头。")
    if errors:
        raise store.SettingsError(errors)
    return out


def validate_smtp(data: dict) -> dict:
    errors: dict[str, str] = {}
    out = {
        "enabled": bool(data.get("enabled")),
        "host": str(data.get("host") or "").strip(),
        "port": _int(data, "port", 1, 65535, errors, _("端口")),
        "security": data.get("security"),
        "username": str(data.get("username") or "").strip(),
        "from_addr": str(data.get("from_addr") or "").strip(),
        "from_name": str(data.get("from_name") or "").strip()[:60],
        "timeout": _int(data, "timeout", 1, 120, errors, _("超时秒数")),
    }
    if out["security"] not in ("none", "starttls", "ssl"):
        errors["security"] = _("加密方式只能是 none、starttls 或 ssl。")
    if out["host"] and not re.match(r"^[A-Za-z0-9.\-\[\]:]+$", out["host"]):
        errors["host"] = _("服务器地址格式不正确。")
    if out["from_addr"] and not re.match(r"^[^@\s]+@[^@\s]+$", out["from_addr"]):
        errors["from_addr"] = _("发件地址不是有效的邮箱。")
    if out["enabled"] and not out["host"]:
        errors["host"] = _("启用邮件提醒需要填写 SMTP 服务器。")
    if out["enabled"] and not out["from_addr"]:
        errors["from_addr"] = _("启用邮件提醒需要填写发件地址。")
    if errors:
        raise store.SettingsError(errors)
    return out


store.register("cadence", "回访节奏与提醒", CADENCE_DEFAULTS, validate_cadence)
store.register("frequency_caps", "联系频率上限", FREQUENCY_DEFAULTS, validate_frequency)
store.register("spot_checks", "跟进抽查", SPOT_CHECK_DEFAULTS, validate_spot_checks)
store.register("dispatch", "提醒发送", DISPATCH_DEFAULTS, validate_dispatch)
store.register("smtp", "邮件服务器", SMTP_DEFAULTS, validate_smtp)


def smtp_password(session: Session) -> str:
    """The SMTP password (stored apart from the ``smtp`` section so no API ever returns it)."""
    row = session.get(Setting, SMTP_SECRET_ROW)
    return (row.data or {}).get("password", "") if row is not None else ""


def set_smtp_password(session: Session, password: str, user, now) -> None:
    """Store a new SMTP password; audited without the value."""
    row = session.get(Setting, SMTP_SECRET_ROW)
    if row is None:
        row = Setting(section=SMTP_SECRET_ROW, data={}, updated_at=now)
        session.add(row)
    row.data = {"password": password}
    row.updated_at = now
    row.updated_by_id = user.id if user else None
    store.audit(session, "smtp", user, now, None, None, _("修改了邮件服务器密码"))
