"""``GET/PUT /api/v1/settings/<section>``: the settings sections features register (admins)."""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user

from crm import clock
from crm.access import access
from crm.api.core import ApiError, bp, doc, json_body
from crm.extensions import db
from crm.models import Role
from crm.settings import store


def _section(section: str):
    if section not in store.SECTIONS:
        known = ", ".join(sorted(store.SECTIONS))
        raise ApiError(
            404, "not_found", _("未知设置分区: %(section)s (可用: %(known)s)", section=section, known=known)
        )
    return store.SECTIONS[section]


@bp.route("/settings")
@access(Role.ADMIN)
@doc("设置分区列表", scope="admin")
def settings_index():
    """The settings sections and their labels."""
    return jsonify(sections=[{"section": s.name, "label": s.label} for s in store.SECTIONS.values()])


@bp.route("/settings/<section>", methods=["GET"])
@access(Role.ADMIN)
@doc("读取一个设置分区", scope="admin")
def settings_get(section: str):
    """The effective values of a section (stored over defaults)."""
    _section(section)
    return jsonify(section=section, data=store.get(db.session, section))


@bp.route("/settings/<section>", methods=["PUT"])
@access(Role.ADMIN)
@doc("修改一个设置分区 (只需给出要改的键)", body={"type": "object"}, scope="admin")
def settings_put(section: str):
    """Change some keys of a section; validated, audited; unknown keys are refused with 422."""
    _section(section)
    payload = json_body()
    try:
        data = store.put(db.session, section, payload, current_user, clock.now())
    except store.SettingsError as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", str(exc), fields=exc.errors) from exc
    db.session.commit()
    return jsonify(section=section, data=data)
