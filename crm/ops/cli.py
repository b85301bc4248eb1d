"""``flask --app app crm backup | restore | doctor``."""

from __future__ import annotations

import click
from flask import current_app

from crm import clock
from crm.cli import crm_cli, fail


def take_backup(directory: str | None = None) -> str:
    """Back up now and remember the outcome (status page); returns a one-line summary. Raises BackupError."""
    from crm.ops import backup
    from crm.ops.runs import record_job

    started = clock.now()
    try:
        made = backup.backup(directory)
    except backup.BackupError as exc:
        record_job("backup", started, False, str(exc))
        raise
    summary = f"{made.path} ({made.size / 1_048_576:.1f} MB)"
    record_job("backup", started, True, summary)
    return summary


@crm_cli.command("backup")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def backup_cmd(directory: str | None) -> None:
    """Write a consistent copy of the database into DIRECTORY (default CRM_BACKUP_DIR or instance/backups),
    named with the time; keeps the newest CRM_BACKUP_KEEP. Safe while the app runs."""
    from crm.ops.backup import BackupError

    try:
        click.echo(f"backup written: {take_backup(directory)}")
    except BackupError as exc:
        fail(str(exc))


@crm_cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--force", is_flag=True, help="Restore even though web, worker or scheduler processes look alive."
)
def restore_cmd(file: str, force: bool) -> None:
    """Replace the database with the backup FILE, then run the migrations. Stop web, worker and scheduler
    first: refuses while any of them has sent a heartbeat in the last 90 seconds (unless --force)."""
    from flask_migrate import upgrade

    from crm.ops import backup, status
    from crm.ops.runs import record_job

    if not force:
        alive = status.running_elsewhere()
        if alive:
            names = ", ".join(f"{p.role} {p.host}:{p.pid}" for p in alive)
            fail(f"the app is running ({names}); stop it first, or pass --force")
    started = clock.now()
    try:
        backup.restore(file)
    except backup.BackupError as exc:
        fail(str(exc))
    upgrade()
    record_job("restore", started, True, file)
    click.echo(
        f"restored {file} into {current_app.config['SQLALCHEMY_DATABASE_URI'].split('@')[-1]}; migrations applied"
    )


@crm_cli.command("doctor")
def doctor_cmd() -> None:
    """Check this production set-up (SECRET_KEY, database, Redis, SMTP, time zone, migrations, backups,
    trusted proxies); print what is wrong; exit 1 when anything is."""
    from crm.ops.doctor import diagnose

    report = diagnose()
    for name in report.passed:
        click.echo(f"ok       {name}")
    for line in report.warnings:
        click.echo(f"warning  {line}")
    for line in report.problems:
        click.echo(f"PROBLEM  {line}")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) found")
        raise SystemExit(1)
    click.echo("no problems found")
