"""``flask --app app crm dispatch [--as-of …]`` and the other reminder commands."""

from __future__ import annotations

import contextlib

import click

from crm import clock
from crm.cli import crm_cli, fail
from crm.extensions import db


def _as_of(value: str | None):
    if not value:
        return contextlib.nullcontext(clock.now())
    try:
        at = clock.parse_iso(value)
    except ValueError as exc:
        fail(str(exc))
    return clock.frozen(at)


@crm_cli.command("dispatch")
@click.option("--as-of", "as_of", help="Run as of this ISO 8601 instant (default: now).")
@click.option("--no-send", is_flag=True, help="Only fan due reminders out into deliveries; send nothing.")
@click.option("--no-generate", is_flag=True, help="Skip generating cadence/new-customer/overdue reminders.")
def dispatch_cmd(as_of: str | None, no_send: bool, no_generate: bool) -> None:
    """Run one dispatch pass: generate reminders, fan out what is due, send it; print what was sent."""
    from crm.reminders.dispatch import dispatch_pass
    from crm.reminders.generate import generate_all

    with _as_of(as_of) as now:
        if not no_generate:
            made = generate_all(db.session, now)
            db.session.commit()
            created = ", ".join(f"{k} {v}" for k, v in made.created.items() if v) or "none"
            click.echo(f"generated: {created}; escalated {made.escalated}; cancelled {made.cancelled}")
        report = dispatch_pass(db.session, now, send=not no_send)
    fanned = ", ".join(f"{k} {v}" for k, v in report.fanned_out.items()) or "nothing due"
    click.echo(f"as of {clock.local(now).isoformat(timespec='minutes')}: fanned out {fanned}")
    if report.reclaimed:
        click.echo(f"reclaimed {report.reclaimed} stuck deliveries")
    for outcome in report.outcomes:
        click.echo("  " + outcome.line())
    click.echo(
        f"sent {report.count('sent')}, failed {report.count('failed')}, gave up {report.count('gave_up')}, "
        f"skipped {report.count('skipped')}"
    )


@crm_cli.command("generate-reminders")
@click.option("--as-of", "as_of", help="Run as of this ISO 8601 instant (default: now).")
def generate_cmd(as_of: str | None) -> None:
    """Generate reminders from every source (set-based, idempotent) and escalate overdue ones."""
    from crm.reminders.generate import generate_all

    with _as_of(as_of) as now:
        made = generate_all(db.session, now)
        db.session.commit()
    for kind, count in made.created.items():
        click.echo(f"{kind:14} {count}")
    click.echo(f"{'escalated':14} {made.escalated}")
    click.echo(f"{'cancelled':14} {made.cancelled}")


@crm_cli.command("spot-checks")
@click.option("--as-of", "as_of", help="Run as of this ISO 8601 instant (default: now).")
def spot_checks_cmd(as_of: str | None) -> None:
    """Sample yesterday's follow-ups for each manager to check (idempotent per day)."""
    from crm.followups.spotcheck import sample_daily

    with _as_of(as_of) as now:
        added = sample_daily(db.session, now)
        db.session.commit()
    click.echo(f"sampled {added} follow-ups")


@crm_cli.command("debug-smtp")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=click.IntRange(1, 65535))
def debug_smtp_cmd(host: str, port: int) -> None:
    """A local SMTP sink for development: prints every email instead of sending it."""
    from crm.reminders.debug_smtp import DebugSmtpServer, print_message

    try:
        server = DebugSmtpServer((host, port), on_message=print_message)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    click.echo(f"debug SMTP server on {host}:{port} — set SMTP host {host}, port {port}, encryption none")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
