"""``flask --app app crm …`` commands. Each exits non-zero with a one-line reason on bad arguments."""

from __future__ import annotations

import importlib

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from crm import clock
from crm.extensions import db

crm_cli = AppGroup("crm", help="公海 CRM commands.")

# Feature command modules, by import path; each registers commands on ``crm_cli`` when imported.
COMMAND_MODULES: list[str] = [
    "crm.redis_cli",
    "crm.recycle.cli",
    "crm.reminders.cli",
    "crm.intake.cli",
    "crm.reports.cli",
    "crm.ops.cli",
]


def fail(message: str) -> None:
    """Print a one-line reason and exit 2."""
    raise click.UsageError(message)


@crm_cli.command("init-db")
@click.option("--drop", is_flag=True, help="Drop every table first (development only).")
def init_db(drop: bool) -> None:
    """Create or upgrade the database schema (runs the migrations) and the default settings rows."""
    from flask_migrate import upgrade

    if drop:
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    upgrade()
    from crm.bootstrap import ensure_defaults

    ensure_defaults(db.session, clock.now())
    db.session.commit()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")


@crm_cli.command("create-user")
@click.argument("email")
@click.option("--name", required=True, help="Display name.")
@click.option("--password", required=True, help="At least 8 characters.")
@click.option("--role", type=click.Choice(["rep", "manager", "admin"]), default="rep", show_default=True)
@click.option("--level", "level_name", help="Level (职级) name, e.g. 初级销售.")
@click.option("--team", "team_name", help="Team name.")
def create_user_cmd(
    email: str, name: str, password: str, role: str, level_name: str | None, team_name: str | None
):
    """Create a user."""
    from crm.auth.services import AccountError, create_user
    from crm.models import Level, Team

    level = team = None
    if level_name:
        level = db.session.scalar(select(Level).where(Level.name == level_name))
        if level is None:
            fail(f"no level named {level_name!r}")
    if team_name:
        team = db.session.scalar(select(Team).where(Team.name == team_name))
        if team is None:
            fail(f"no team named {team_name!r}")
    try:
        user = create_user(
            db.session,
            email=email,
            name=name,
            password=password,
            role=role,
            level=level,
            team=team,
            now=clock.now(),
        )
    except AccountError as exc:
        fail(str(exc))
    db.session.commit()
    click.echo(f"created user {user.id} {user.email} ({user.role})")


@crm_cli.command("create-token")
@click.argument("email")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@click.option(
    "--scopes", default="read write", show_default=True, help="Space-separated: read write leads admin."
)
def create_token_cmd(email: str, name: str, scopes: str) -> None:
    """Print a new API bearer token for EMAIL (only its hash is stored)."""
    from crm.auth.services import AccountError, create_token
    from crm.models import User

    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        fail(f"no user with email {email!r}")
    if not user.active:
        fail(f"user {email} is deactivated")
    try:
        plain = create_token(db.session, user, name, clock.now(), scopes)
    except AccountError as exc:
        fail(str(exc))
    db.session.commit()
    click.echo(plain)


@crm_cli.command("seed-demo")
@click.option("--customers", default=300, show_default=True, type=click.IntRange(0, 1_000_000))
@click.option("--seed", default=2026, show_default=True, help="Random seed (same seed, same data).")
@click.option("--password", default="demo1234", show_default=True, help="Password of every demo user.")
@click.option(
    "--if-empty", is_flag=True, help="Skip quietly (exit 0) when the database already has customers."
)
def seed_demo_cmd(customers: int, seed: int, password: str, if_empty: bool) -> None:
    """Fill an empty database with realistic Chinese demo data and print the demo logins."""
    from crm.demo import DemoError, seed_demo
    from crm.models import Customer

    if if_empty and db.session.scalar(select(Customer.id).limit(1)) is not None:
        click.echo("the database already has customers; demo data not loaded")
        return
    try:
        logins = seed_demo(db.session, customers=customers, seed=seed, password=password, now=clock.now())
    except DemoError as exc:
        fail(str(exc))
    db.session.commit()
    click.echo(f"demo data ready; logins (password: {password}):")
    for email, label in logins:
        click.echo(f"  {email:28} {label}")


def register_cli(app: Flask) -> None:
    for path in COMMAND_MODULES:
        importlib.import_module(path)
    app.cli.add_command(crm_cli)
