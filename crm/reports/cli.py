"""``flask --app app crm rollup [--rebuild]`` and ``crm weekly-digest``: the dashboard background work by hand."""

from __future__ import annotations

import click

from crm import clock
from crm.cli import crm_cli
from crm.extensions import db


@crm_cli.command("rollup")
@click.option("--rebuild", is_flag=True, help="Drop the rollup and build it again from the whole history.")
def rollup_cmd(rebuild: bool) -> None:
    """Bring the daily dashboard rollup up to yesterday (recomputes the last 7 days; idempotent)."""
    from crm.reports.rollup import build

    result = build(db.session, clock.now(), rebuild=rebuild)
    db.session.commit()
    click.echo(f"rollup: days {result['from']} … before {result['until']}, {result['rows']} rows")


@crm_cli.command("weekly-digest")
def weekly_digest_cmd() -> None:
    """Give managers and admins last week's pool review (once per user and week)."""
    from crm.reports.review import send_weekly_digest

    made = send_weekly_digest(db.session, clock.now())
    db.session.commit()
    click.echo(f"weekly digest: {made} new")
