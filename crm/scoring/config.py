"""The ``scoring`` settings section: points per factor, dimension caps, grade bands and thresholds.

Shape (every key is editable on the settings page and through ``PUT /api/v1/settings/scoring``):
- ``caps``: the most points each dimension may give (profile, behaviour, interaction, deals).
- profile: ``size_bands`` ([[min employees, points], …]), ``industry`` / ``job_level`` / ``region`` /
  ``channel`` maps (value → points) with an ``*_other`` fallback for values not listed (an empty value gives
  nothing), ``contact_points`` for each contact method left (phone, email, wechat).
- behaviour: ``events`` — per type a ``weight`` and a ``half_life_days`` (an event's points halve every
  half-life, so a download last week counts more than one last quarter).
- interaction: ``interaction_days`` window, ``followup_points`` per real follow-up in it,
  ``goal_met_points`` extra when the follow-up met its goal.
- deals: ``won_deal_points`` per won opportunity.
- ``grade_a`` / ``grade_b`` bands, ``hot_threshold`` (crossing notifies), ``routing_threshold`` (new leads at or
  above are auto-assigned), ``win_probability`` (show the naive-Bayes estimate).
Points may be negative (e.g. an industry you do not serve), within ±50.
"""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm.settings import store

EVENT_TYPES = ("email_open", "ad_click", "download", "form_submit", "page_view")
EVENT_LABELS = {
    "email_open": _l("邮件打开"),
    "ad_click": _l("广告点击"),
    "download": _l("资料下载"),
    "form_submit": _l("表单提交"),
    "page_view": _l("页面浏览"),
}
DIMENSIONS = ("profile", "behaviour", "interaction", "deals")
DIMENSION_LABELS = {
    "profile": _l("画像"),
    "behaviour": _l("行为"),
    "interaction": _l("互动"),
    "deals": _l("成交"),
    "total": _l("总分"),
}
MAPS = ("industry", "job_level", "region", "channel")

DEFAULTS: dict = {
    "caps": {"profile": 50, "behaviour": 30, "interaction": 25, "deals": 20},
    "size_bands": [[1000, 12], [200, 9], [50, 6], [10, 3]],
    "industry": {"金融": 10, "制造业": 8, "互联网": 8, "医疗": 8, "教育": 6, "零售": 6, "物流": 5, "餐饮": 4},
    "industry_other": 3,
    "job_level": {"决策层": 12, "总监": 10, "经理": 7, "员工": 2},
    "job_level_other": 2,
    "region": {"华东": 6, "华南": 6, "华北": 5, "华中": 4, "西南": 4},
    "region_other": 2,
    "channel": {
        "老客户转介绍": 10,
        "展会": 7,
        "官网表单": 6,
        "百度推广": 4,
        "公众号": 4,
        "抖音投放": 3,
        "电话开发": 2,
    },
    "channel_other": 2,
    "contact_points": {"phone": 3, "email": 1, "wechat": 2},
    "events": {
        "email_open": {"weight": 2, "half_life_days": 7},
        "ad_click": {"weight": 4, "half_life_days": 7},
        "download": {"weight": 8, "half_life_days": 14},
        "form_submit": {"weight": 12, "half_life_days": 30},
        "page_view": {"weight": 1, "half_life_days": 3},
    },
    "interaction_days": 30,
    "followup_points": 5,
    "goal_met_points": 3,
    "won_deal_points": 15,
    "grade_a": 80,
    "grade_b": 50,
    "hot_threshold": 80,
    "routing_threshold": 40,
    "win_probability": True,
}


def _int(data: dict, key: str, lo: int, hi: int, errors: dict, label: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        errors[key] = _("%(label)s 需为 %(lo)s–%(hi)s 的整数。", label=label, lo=lo, hi=hi)
        return None
    return value


def _points(value, errors: dict, key: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not -50 <= value <= 50:
        errors[key] = _("分值需为 -50–50 的整数。")
        return None
    return value


def validate(data: dict) -> dict:
    """Clean a candidate document or raise ``SettingsError`` naming each bad key."""
    errors: dict[str, str] = {}
    out: dict = {}
    caps = data.get("caps") if isinstance(data.get("caps"), dict) else {}
    out["caps"] = {}
    for dim in DIMENSIONS:
        value = caps.get(dim, DEFAULTS["caps"][dim])
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            errors[f"caps.{dim}"] = _("维度上限需为 0–100 的整数。")
        out["caps"][dim] = value
    bands = data.get("size_bands")
    clean_bands = []
    if not isinstance(bands, list):
        errors["size_bands"] = _("公司规模分档格式不正确。")
    else:
        for band in bands:
            if (
                not isinstance(band, list | tuple)
                or len(band) != 2
                or isinstance(band[0], bool)
                or not isinstance(band[0], int)
                or band[0] < 0
                or _points(band[1], errors, "size_bands") is None
            ):
                errors.setdefault("size_bands", _("每档写成「人数=分值」,人数为非负整数。"))
                continue
            clean_bands.append([band[0], band[1]])
        mins = [b[0] for b in clean_bands]
        if len(set(mins)) != len(mins):
            errors["size_bands"] = _("公司规模分档的人数不能重复。")
    out["size_bands"] = sorted(clean_bands, key=lambda b: -b[0])
    for name in MAPS:
        mapping = data.get(name)
        if not isinstance(mapping, dict):
            errors[name] = _("格式不正确。")
            mapping = {}
        clean = {}
        for key, value in mapping.items():
            key = str(key).strip()
            if not key or len(key) > 40:
                errors[name] = _("名称不能为空且不超过 40 字。")
                continue
            if _points(value, errors, name) is not None:
                clean[key] = value
        out[name] = clean
        other = data.get(f"{name}_other")
        out[f"{name}_other"] = _points(other, errors, f"{name}_other")
    contact = data.get("contact_points") if isinstance(data.get("contact_points"), dict) else {}
    out["contact_points"] = {}
    for method in ("phone", "email", "wechat"):
        value = contact.get(method, DEFAULTS["contact_points"][method])
        out["contact_points"][method] = _points(value, errors, f"contact_points.{method}")
    events = data.get("events") if isinstance(data.get("events"), dict) else {}
    out["events"] = {}
    for kind in EVENT_TYPES:
        spec = events.get(kind) if isinstance(events.get(kind), dict) else DEFAULTS["events"][kind]
        weight = _points(spec.get("weight"), errors, f"events.{kind}.weight")
        half = spec.get("half_life_days")
        if isinstance(half, bool) or not isinstance(half, int | float) or not 0.5 <= half <= 365:
            errors[f"events.{kind}.half_life_days"] = _("半衰期需为 0.5–365 天。")
        out["events"][kind] = {"weight": weight, "half_life_days": half}
    out["interaction_days"] = _int(data, "interaction_days", 1, 365, errors, _("互动统计天数"))
    for key, label in (
        ("followup_points", _("每次跟进分值")),
        ("goal_met_points", _("达成目标加分")),
        ("won_deal_points", _("每次成交分值")),
    ):
        out[key] = _points(data.get(key), errors, key)
        if key in errors:
            errors[key] = _("%(label)s 需为 -50–50 的整数。", label=label)
    out["grade_a"] = _int(data, "grade_a", 1, 100, errors, _("A 级分数线"))
    out["grade_b"] = _int(data, "grade_b", 1, 100, errors, _("B 级分数线"))
    if out["grade_a"] is not None and out["grade_b"] is not None and out["grade_b"] >= out["grade_a"]:
        errors["grade_b"] = _("B 级分数线必须低于 A 级。")
    out["hot_threshold"] = _int(data, "hot_threshold", 1, 100, errors, _("高意向阈值"))
    out["routing_threshold"] = _int(data, "routing_threshold", 0, 101, errors, _("自动分配阈值"))
    out["win_probability"] = bool(data.get("win_probability"))
    if errors:
        raise store.SettingsError(errors)
    return out


store.register("scoring", "客户评分", DEFAULTS, validate)


def get(session) -> dict:
    """The effective ``scoring`` section, read once per transaction."""
    from crm.intake.txcache import settings_section

    return settings_section(session, "scoring")
