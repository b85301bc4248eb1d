"""公海 CRM: the application factory."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from flask import Flask, has_request_context, request, session
from flask_login import current_user

from crm import access, clock
from crm.config import build_config
from crm.extensions import babel, csrf, db, install_idle_ping, login_manager, migrate

# Feature blueprints, by import path; each module exposes ``bp``.
BLUEPRINTS = [
    "crm.auth.routes",
    "crm.admin.routes",
    "crm.main.routes",
    "crm.api",
    "crm.pool.routes",
    "crm.customers.routes",
    "crm.recycle.routes",
    "crm.followups.routes",
    "crm.reminders.routes",
    "crm.inbox.routes",
    "crm.intake.routes",
    "crm.scoring.routes",
    "crm.pipeline.routes",
    "crm.reports.routes",
    "crm.ops.routes",
    "crm.approvals.routes",
    "crm.tasks.routes",
]


def _default_instance_path() -> Path:
    env = os.environ.get("CRM_INSTANCE_PATH")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "instance"


def create_app(config: dict | None = None) -> Flask:
    """Build the app. ``config`` overrides the defaults and the environment (tests pass theirs here)."""
    config = dict(config or {})
    instance_path = Path(config.pop("INSTANCE_PATH", None) or _default_instance_path())
    instance_path.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.update(build_config(instance_path))
    app.config.update(config)

    from crm.web import install_input_guards

    install_input_guards(app)
    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            install_idle_ping(engine)
    migrate.init_app(
        app,
        db,
        render_as_batch=True,
        compare_type=True,
        directory=str(Path(__file__).resolve().parent.parent / "migrations"),
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=_select_locale, timezone_selector=lambda: clock.default_tz_name())

    from crm import models  # noqa: F401  (register tables)
    from crm.auth.loaders import install_loaders
    from crm.errors import install_error_handlers
    from crm.web import install_web_hooks

    install_loaders(login_manager)
    for path in BLUEPRINTS:
        module = importlib.import_module(path)
        app.register_blueprint(module.bp)
    install_error_handlers(app)
    install_web_hooks(app)
    from crm.assets import install_assets
    from crm.ops import install_ops

    # Request id, log line, metrics, heartbeat: before access.enforce, so they see every request.
    install_ops(app)
    install_assets(app)
    app.before_request(access.enforce)

    from crm.cli import register_cli

    register_cli(app)
    access.check_declarations(app)
    if not app.debug and not app.testing:
        from crm.ops.logs import configure

        configure(app.config.get("LOG_FORMAT"))
    return app


def _select_locale() -> str:
    """The user's saved language, else the one chosen on the login page, else Simplified Chinese.

    Outside a request (CLI commands, rq jobs) services still call ``_()``: they get the default language.
    """
    from flask import current_app

    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    if current_user and current_user.is_authenticated and current_user.locale in languages:
        return current_user.locale
    chosen = session.get("lang")
    if chosen in languages:
        return chosen
    if request.args.get("lang") in languages:
        return request.args["lang"]
    return current_app.config["BABEL_DEFAULT_LOCALE"]
