"""The ``intake`` settings section: fuzzy threshold, the default lead pool and the public-form rate limit."""

from __future__ import annotations

from flask_babel import gettext as _

from crm.settings import store

DEFAULTS: dict = {
    # rapidfuzz similarity (0–100) at which two company names are a possible duplicate.
    "fuzzy_threshold": 85,
    # Where API and manual leads go when no pool is named (None: the first enabled pool of kind "lead").
    "lead_pool_id": None,
    # Public web forms: at most this many submissions per address per window.
    "form_rate_limit": 5,
    "form_rate_window_minutes": 10,
}


def validate(data: dict) -> dict:
    errors: dict[str, str] = {}

    def integer(key: str, lo: int, hi: int, message: str) -> int | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            errors[key] = message
            return None
        return value

    out = {
        "fuzzy_threshold": integer("fuzzy_threshold", 50, 100, _("相似度阈值需为 50–100 的整数。")),
        "form_rate_limit": integer("form_rate_limit", 1, 1000, _("提交次数上限需为 1–1000。")),
        "form_rate_window_minutes": integer(
            "form_rate_window_minutes", 1, 1440, _("时间窗口需为 1–1440 分钟。")
        ),
        "lead_pool_id": None,
    }
    pool_id = data.get("lead_pool_id")
    if pool_id not in (None, ""):
        if isinstance(pool_id, bool) or not isinstance(pool_id, int) or pool_id <= 0:
            errors["lead_pool_id"] = _("线索池编号不正确。")
        else:
            out["lead_pool_id"] = pool_id
    if errors:
        raise store.SettingsError(errors)
    return out


store.register("intake", "线索录入与查重", DEFAULTS, validate)


def get(session) -> dict:
    """The effective ``intake`` section, read once per transaction."""
    from crm.intake.txcache import settings_section

    return settings_section(session, "intake")
