"""``flask --app app crm sweep --as-of ISO8601 [--dry-run]``: run the recycle sweep and print a summary."""

from __future__ import annotations

import click

from crm import clock
from crm.cli import crm_cli, fail
from crm.extensions import db


@crm_cli.command("sweep")
@click.option(
    "--as-of",
    "as_of",
    help="The instant to sweep as of (ISO 8601, e.g. 2026-03-14T10:00:00+08:00); default now.",
)
@click.option("--dry-run", is_flag=True, help="Compute everything, save nothing (the run is still logged).")
def sweep_cmd(as_of: str | None, dry_run: bool) -> None:
    """Recycle customers due at the instant, send due warnings and escalations, print what happened."""
    from crm.recycle.sweep import sweep

    if as_of is not None:
        try:
            at = clock.parse_iso(as_of)
        except ValueError:
            fail(f"--as-of is not an ISO 8601 timestamp: {as_of!r} (example: 2026-03-14T10:00:00+08:00)")
    else:
        at = clock.now()
    result = sweep(db.session, at, dry_run=dry_run)
    click.echo(result.summary())
    for label, count in sorted(result.by_rule.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {label}: {count}")
