"""The scoring settings page: one form over the nested ``scoring`` section (maps typed as 名称=分值 lines)."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, FloatField, IntegerField, TextAreaField
from wtforms.validators import InputRequired

from crm.forms import FlaskForm
from crm.scoring.config import DIMENSIONS, EVENT_TYPES, MAPS

NEED = [InputRequired(_l("请填写。"))]


class ScoringForm(FlaskForm):
    cap_profile = IntegerField(_l("画像上限"), validators=NEED)
    cap_behaviour = IntegerField(_l("行为上限"), validators=NEED)
    cap_interaction = IntegerField(_l("互动上限"), validators=NEED)
    cap_deals = IntegerField(_l("成交上限"), validators=NEED)
    size_bands = TextAreaField(_l("公司规模分档 (人数≥N=分值,每行一档)"))
    industry = TextAreaField(_l("行业分值 (名称=分值)"))
    industry_other = IntegerField(_l("其他行业"), validators=NEED)
    job_level = TextAreaField(_l("职级分值 (名称=分值)"))
    job_level_other = IntegerField(_l("其他职级"), validators=NEED)
    region = TextAreaField(_l("地区分值 (名称=分值)"))
    region_other = IntegerField(_l("其他地区"), validators=NEED)
    channel = TextAreaField(_l("渠道分值 (名称=分值)"))
    channel_other = IntegerField(_l("其他渠道"), validators=NEED)
    contact_phone = IntegerField(_l("留了电话"), validators=NEED)
    contact_email = IntegerField(_l("留了邮箱"), validators=NEED)
    contact_wechat = IntegerField(_l("留了微信"), validators=NEED)
    ev_email_open_weight = IntegerField(_l("分值"), validators=NEED)
    ev_email_open_half = FloatField(_l("半衰期 (天)"), validators=NEED)
    ev_ad_click_weight = IntegerField(_l("分值"), validators=NEED)
    ev_ad_click_half = FloatField(_l("半衰期 (天)"), validators=NEED)
    ev_download_weight = IntegerField(_l("分值"), validators=NEED)
    ev_download_half = FloatField(_l("半衰期 (天)"), validators=NEED)
    ev_form_submit_weight = IntegerField(_l("分值"), validators=NEED)
    ev_form_submit_half = FloatField(_l("半衰期 (天)"), validators=NEED)
    ev_page_view_weight = IntegerField(_l("分值"), validators=NEED)
    ev_page_view_half = FloatField(_l("半衰期 (天)"), validators=NEED)
    interaction_days = IntegerField(_l("互动统计天数"), validators=NEED)
    followup_points = IntegerField(_l("每次跟进"), validators=NEED)
    goal_met_points = IntegerField(_l("跟进达成目标另加"), validators=NEED)
    won_deal_points = IntegerField(_l("每次成交"), validators=NEED)
    grade_a = IntegerField(_l("A 级 ≥"), validators=NEED)
    grade_b = IntegerField(_l("B 级 ≥"), validators=NEED)
    hot_threshold = IntegerField(_l("高意向阈值 (越过时提醒)"), validators=NEED)
    routing_threshold = IntegerField(_l("自动分配阈值 (新线索≥此分自动分配)"), validators=NEED)
    win_probability = BooleanField(_l("显示赢单概率 (按历史赢单/输单学习)"))

    def load(self, cfg: dict) -> None:
        for dim in DIMENSIONS:
            getattr(self, f"cap_{dim}").data = cfg["caps"][dim]
        self.size_bands.data = "\n".join(f"{m}={p}" for m, p in cfg["size_bands"])
        for name in MAPS:
            getattr(self, name).data = "\n".join(f"{k}={v}" for k, v in cfg[name].items())
            getattr(self, f"{name}_other").data = cfg[f"{name}_other"]
        for method in ("phone", "email", "wechat"):
            getattr(self, f"contact_{method}").data = cfg["contact_points"][method]
        for kind in EVENT_TYPES:
            getattr(self, f"ev_{kind}_weight").data = cfg["events"][kind]["weight"]
            getattr(self, f"ev_{kind}_half").data = cfg["events"][kind]["half_life_days"]
        for key in ("interaction_days", "followup_points", "goal_met_points", "won_deal_points", "grade_a",
                    "grade_b", "hot_threshold", "routing_threshold", "win_probability"):  # fmt: skip
            getattr(self, key).data = cfg[key]

    def _pairs(self, field, numeric_keys: bool) -> list | dict | None:
        out = [] if numeric_keys else {}
        for number, line in enumerate((field.data or "").splitlines(), start=1):
            line = line.strip().replace("=", "=").replace(":", "=").replace(":", "=")
            if not line:
                continue
            key, sep, value = line.rpartition("=")
            try:
                points = int(value.strip())
                if not sep or not key.strip():
                    raise ValueError
                if numeric_keys:
                    out.append([int(key.strip().rstrip("+")), points])
                else:
                    out[key.strip()] = points
            except ValueError:
                field.errors = [*field.errors, _("第 %(n)s 行应写成「名称=分值」,分值为整数。", n=number)]
                return None
        return out

    def document(self) -> dict | None:
        """The settings document, or None when a line could not be read (errors are on the fields)."""
        doc: dict = {"caps": {dim: getattr(self, f"cap_{dim}").data for dim in DIMENSIONS}}
        doc["size_bands"] = self._pairs(self.size_bands, True)
        for name in MAPS:
            doc[name] = self._pairs(getattr(self, name), False)
            doc[f"{name}_other"] = getattr(self, f"{name}_other").data
        doc["contact_points"] = {m: getattr(self, f"contact_{m}").data for m in ("phone", "email", "wechat")}
        doc["events"] = {
            kind: {
                "weight": getattr(self, f"ev_{kind}_weight").data,
                "half_life_days": getattr(self, f"ev_{kind}_half").data,
            }
            for kind in EVENT_TYPES
        }
        for key in ("interaction_days", "followup_points", "goal_met_points", "won_deal_points", "grade_a",
                    "grade_b", "hot_threshold", "routing_threshold"):  # fmt: skip
            doc[key] = getattr(self, key).data
        doc["win_probability"] = bool(self.win_probability.data)
        if any(doc[k] is None for k in ("size_bands", *MAPS)):
            return None
        return doc

    def field_for(self, key: str):
        """The form field a settings error key (``caps.profile``, ``events.download.weight`` …) belongs to."""
        if key.startswith("caps."):
            return getattr(self, "cap_" + key.split(".", 1)[1], None)
        if key.startswith("contact_points."):
            return getattr(self, "contact_" + key.split(".", 1)[1], None)
        if key.startswith("events."):
            _e, kind, part = key.split(".")
            return getattr(self, f"ev_{kind}_{'weight' if part == 'weight' else 'half'}", None)
        return getattr(self, key, None)
