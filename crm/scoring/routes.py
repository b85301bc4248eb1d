"""Scoring screens: the settings page (points, bands, thresholds, and the intake section beside it) and
the hot-share report for managers."""

from __future__ import annotations

from flask import Blueprint, flash, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.forms import choices
from crm.htmx import redirect_htmx, render
from crm.intake import config as intake_config
from crm.intake.forms import IntakeSettingsForm
from crm.models import Customer, Pool, Role
from crm.scoring import (
    config,
    panels,  # noqa: F401  (registers panels and signal receivers)
    report,
)
from crm.scoring import services as scoring
from crm.scoring.config import EVENT_LABELS, EVENT_TYPES
from crm.scoring.forms import ScoringForm
from crm.settings import store

bp = Blueprint("scoring", __name__, url_prefix="/scoring")

SYNC_LIMIT = 5000  # recompute in the request below this many customers, else in the background


def _grade_counts() -> dict[str, int]:
    return dict(
        db.session.execute(
            select(Customer.grade, func.count())
            .where(Customer.merged_into_id.is_(None))
            .group_by(Customer.grade)
        ).all()
    )


def _intake_form() -> IntakeSettingsForm:
    form = IntakeSettingsForm(prefix="intake")
    pools = db.session.scalars(select(Pool).where(Pool.deleted_at.is_(None)).order_by(Pool.id))
    form.lead_pool_id.choices = choices(
        [(None, _("自动 (第一个「线索」类公海池)"))] + [(p.id, p.name) for p in pools]
    )
    if request.method == "GET" or not form.is_submitted():
        cfg = intake_config.get(db.session)
        for key in ("fuzzy_threshold", "lead_pool_id", "form_rate_limit", "form_rate_window_minutes"):
            getattr(form, key).data = cfg[key]
    return form


def _page(form: ScoringForm, intake_form: IntakeSettingsForm, status: int = 200, block: str | None = None):
    return render(
        "scoring/settings.html", block, status=status, form=form, intake_form=intake_form,
        events=[(k, EVENT_LABELS[k]) for k in EVENT_TYPES], grades=_grade_counts(),
    )  # fmt: skip


def _rescore_after_change() -> str:
    total = db.session.scalar(
        select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
    )
    if total <= SYNC_LIMIT:
        result = scoring.recompute_all(db.session, clock.now())
        return _("已按新规则重新计算 %(n)s 位客户的评分。", n=result["customers"])
    from crm.tasks import services as tasks

    task = tasks.start(
        db.session, "score_recompute", current_user, clock.now(), total=total, inline_max=SYNC_LIMIT
    )
    if task.status == "queued" and task.job_id is None:
        return _("已保存。后台服务暂时不可用,评分重算已排队,服务恢复后自动开始。")
    return _("已保存。%(n)s 位客户的评分正在后台重新计算,进度见「后台任务」。", n=total)


@bp.route("/settings", methods=["GET", "POST"])
@access(Role.ADMIN)
def settings():
    """评分规则: points per factor, caps, grade bands and thresholds; saved, audited, then recomputed."""
    form = ScoringForm()
    if request.method == "GET":
        form.load(config.get(db.session))
    elif form.validate_on_submit():
        doc = form.document()
        if doc is not None:
            try:
                store.put(db.session, "scoring", doc, current_user, clock.now())
            except store.SettingsError as exc:
                db.session.rollback()
                for key, message in exc.errors.items():
                    target = form.field_for(key) or form.size_bands
                    target.errors = [*list(target.errors), message]
            else:
                db.session.commit()
                flash(_rescore_after_change(), "success")
                return redirect_htmx(url_for("scoring.settings"))
    status = 422 if request.method == "POST" else 200
    return _page(form, _intake_form(), status, "scoring_form")


@bp.route("/settings/intake", methods=["POST"])
@access(Role.ADMIN)
def intake_settings():
    """The intake section (fuzzy threshold, default lead pool, public-form rate limit)."""
    intake_form = _intake_form()
    if intake_form.validate_on_submit():
        data = {k: getattr(intake_form, k).data for k in
                ("fuzzy_threshold", "lead_pool_id", "form_rate_limit", "form_rate_window_minutes")}  # fmt: skip
        try:
            store.put(db.session, "intake", data, current_user, clock.now())
        except store.SettingsError as exc:
            db.session.rollback()
            for key, message in exc.errors.items():
                getattr(intake_form, key).errors = [message]
        else:
            db.session.commit()
            flash(_("已保存查重与线索设置。"), "success")
            return redirect_htmx(url_for("scoring.settings"))
    form = ScoringForm()
    form.load(config.get(db.session))
    return _page(form, intake_form, 422, "intake_form")


@bp.route("/report")
@access(Role.MANAGER)
def report_page():
    """评分报表: each rep's share of follow-ups on hot customers against their share of hot customers."""
    try:
        days = max(7, min(180, int(request.args.get("days", 30))))
    except ValueError:
        days = 30
    rows, total, hot = report.hot_share(db.session, current_user, clock.now(), days)
    return render("scoring/report.html", rows=rows, total=total, hot=hot, days=days)
