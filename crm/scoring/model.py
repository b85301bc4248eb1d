"""The points model: customer facts + settings → an explainable breakdown whose lines sum to the score.

A breakdown is ``{"v": 1, "lines": [{"d": dimension, "f": factor, "v": value, "p": points}, …],
"total": score}``. Factor points are rounded to whole points first; a dimension over its cap gets a
``cap`` line taking the excess back, and the total is clamped to 0–100 with a ``cap``/``floor`` line, so
``sum(line["p"]) == total`` always holds (tested).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime

from flask_babel import gettext as _

from crm.scoring.config import DIMENSION_LABELS, DIMENSIONS, EVENT_LABELS

SECONDS_PER_DAY = 86400.0


@dataclass
class Facts:
    """What the score looks at for one customer."""

    company_size: int | None = None
    industry: str | None = None
    job_level: str | None = None
    region: str | None = None
    channel: str | None = None
    has_phone: bool = False
    has_email: bool = False
    has_wechat: bool = False
    events: list[tuple[str, datetime]] = field(default_factory=list)  # (type, at)
    followups: int = 0  # real follow-ups in the interaction window
    goals_met: int = 0
    won_deals: int = 0


def round_points(x: float) -> int:
    """Half up, symmetric for negatives (Python's round() would send 2.5 to 2)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _map_points(cfg: dict, name: str, value: str | None) -> int:
    if not value:
        return 0
    return int(cfg[name].get(value, cfg[f"{name}_other"]))


def size_points(cfg: dict, size: int | None) -> int:
    if size is None:
        return 0
    for minimum, points in cfg["size_bands"]:  # sorted by min, descending
        if size >= minimum:
            return int(points)
    return 0


def decayed(weight: float, half_life_days: float, age_seconds: float) -> float:
    """``weight`` halved every ``half_life_days``; events from the future count in full."""
    return weight * 0.5 ** (max(0.0, age_seconds) / (half_life_days * SECONDS_PER_DAY))


def profile_lines(cfg: dict, facts: Facts) -> list[dict]:
    """The profile (画像) lines before the cap: they depend on the customer's fields only."""
    lines: list[dict] = []

    def add(factor: str, value, points: int) -> None:
        if points:
            lines.append({"d": "profile", "f": factor, "v": value, "p": points})

    add("company_size", facts.company_size, size_points(cfg, facts.company_size))
    add("industry", facts.industry, _map_points(cfg, "industry", facts.industry))
    add("job_level", facts.job_level, _map_points(cfg, "job_level", facts.job_level))
    add("region", facts.region, _map_points(cfg, "region", facts.region))
    add("channel", facts.channel, _map_points(cfg, "channel", facts.channel))
    contact = cfg["contact_points"]
    methods = [m for m, present in (("phone", facts.has_phone), ("email", facts.has_email),
                                    ("wechat", facts.has_wechat)) if present]  # fmt: skip
    add("contact", "+".join(methods), sum(int(contact[m]) for m in methods))
    return lines


def dynamic_lines(cfg: dict, facts: Facts, now: datetime) -> list[dict]:
    """Behaviour (decayed), interaction and deal lines before their caps: they change with time and events."""
    lines: list[dict] = []
    if facts.events:
        per_type: dict[str, list[float]] = {}
        for kind, at in facts.events:
            spec = cfg["events"].get(kind)
            if spec is None:
                continue
            per_type.setdefault(kind, []).append(
                decayed(spec["weight"], spec["half_life_days"], (now - at).total_seconds())
            )
        for kind in cfg["events"]:
            if kind in per_type:
                points = round_points(sum(per_type[kind]))
                if points:
                    lines.append({"d": "behaviour", "f": kind, "v": len(per_type[kind]), "p": points})
    for dim, factor, n, each in (
        ("interaction", "followups", facts.followups, cfg["followup_points"]),
        ("interaction", "goals_met", facts.goals_met, cfg["goal_met_points"]),
        ("deals", "won", facts.won_deals, cfg["won_deal_points"]),
    ):
        if n and each:
            lines.append({"d": dim, "f": factor, "v": n, "p": n * int(each)})
    return lines


def assemble(cfg: dict, lines: list[dict]) -> dict:
    """Order the lines by dimension, add cap lines for dimensions over their cap and clamp the total.

    ``h`` is a short digest of the lines: the nightly pass compares it (read straight out of the stored
    JSON by the database) instead of decoding a million documents.
    """
    by_dim: dict[str, list[dict]] = {}
    for line in lines:
        by_dim.setdefault(line["d"], []).append(line)
    capped: list[dict] = []
    total = 0
    caps = cfg["caps"]
    for dim in DIMENSIONS:
        dim_lines = by_dim.get(dim)
        if not dim_lines:
            continue
        capped += dim_lines
        subtotal = 0
        for line in dim_lines:
            subtotal += line["p"]
        cap = int(caps[dim])
        if subtotal > cap:
            capped.append({"d": dim, "f": "cap", "v": cap, "p": cap - subtotal})
            subtotal = cap
        total += subtotal
    if total > 100:
        capped.append({"d": "total", "f": "cap", "v": 100, "p": 100 - total})
        total = 100
    elif total < 0:
        capped.append({"d": "total", "f": "floor", "v": 0, "p": -total})
        total = 0
    return {"v": 1, "lines": capped, "total": total, "h": digest(capped)}


def digest(lines: list[dict]) -> str:
    """Eight hex digits that change when any line changes."""
    return format(zlib.crc32(repr([(x["d"], x["f"], x["v"], x["p"]) for x in lines]).encode()), "08x")


def breakdown(cfg: dict, facts: Facts, now: datetime) -> dict:
    """The explainable score of one customer."""
    return assemble(cfg, profile_lines(cfg, facts) + dynamic_lines(cfg, facts, now))


def grade_for(cfg: dict, score: int) -> str:
    if score >= cfg["grade_a"]:
        return "A"
    if score >= cfg["grade_b"]:
        return "B"
    return "C"


def line_label(line: dict) -> str:
    """A readable Chinese label of a breakdown line (translated at render time)."""
    factor, value = line["f"], line["v"]
    if factor == "company_size":
        return _("公司规模 %(n)s 人", n=value)
    if factor == "industry":
        return _("行业: %(v)s", v=value)
    if factor == "job_level":
        return _("职级: %(v)s", v=value)
    if factor == "region":
        return _("地区: %(v)s", v=value)
    if factor == "channel":
        return _("渠道: %(v)s", v=value)
    if factor == "contact":
        names = {"phone": _("电话"), "email": _("邮箱"), "wechat": _("微信")}
        return _("联系方式: %(v)s", v="、".join(names.get(m, m) for m in str(value).split("+")))
    if factor in EVENT_LABELS:
        return _("%(kind)s × %(n)s (按时间衰减)", kind=EVENT_LABELS[factor], n=value)
    if factor == "followups":
        return _("近期跟进 %(n)s 次", n=value)
    if factor == "goals_met":
        return _("跟进达成目标 %(n)s 次", n=value)
    if factor == "won":
        return _("成交 %(n)s 单", n=value)
    if factor == "cap":
        if line["d"] == "total":
            return _("总分上限 100")
        return _("%(dim)s上限 %(n)s 分", dim=DIMENSION_LABELS.get(line["d"], line["d"]), n=value)
    if factor == "floor":
        return _("总分不低于 0")
    return str(factor)


def explain(doc: dict | None) -> list[dict]:
    """Breakdown lines with labels and dimension labels, for pages and the API."""
    out = []
    for line in (doc or {}).get("lines", []):
        out.append(
            {
                "dimension": line["d"],
                "dimension_label": str(DIMENSION_LABELS.get(line["d"], line["d"])),
                "factor": line["f"],
                "value": line["v"],
                "points": line["p"],
                "label": line_label(line),
            }
        )
    return out


def dimension_totals(doc: dict | None) -> dict[str, int]:
    totals = {dim: 0 for dim in DIMENSIONS}
    for line in (doc or {}).get("lines", []):
        if line["d"] in totals:
            totals[line["d"]] += line["p"]
    return totals
