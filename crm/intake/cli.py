"""CLI: ``flask --app app crm import FILE --pool NAME`` (the same import service as the web pages) and
``crm rescore`` (the nightly score recompute, on demand)."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select

from crm import clock
from crm.cli import crm_cli, fail
from crm.extensions import db
from crm.intake import demo  # noqa: F401  (adds the intake seeder to seed-demo)


@crm_cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pool", "pool_name", required=True, help="Target pool name (公海池名称).")
@click.option("--user", "email", help="Who imports (a pool admin); default: the first active admin.")
@click.option("--channel", default="", help="Channel for rows without a channel column.")
@click.option("--campaign", default="", help="Campaign for rows without a campaign column.")
@click.option("--dry-run", is_flag=True, help="Validate and report only; import nothing.")
def import_cmd(
    file: Path, pool_name: str, email: str | None, channel: str, campaign: str, dry_run: bool
) -> None:
    """Import leads from an .xlsx or .csv FILE into a pool (columns guessed from the headers)."""
    from crm.intake import importer
    from crm.models import Pool, Role, User

    if not file.exists():
        fail(f"no such file: {file}")
    pool = db.session.scalar(select(Pool).where(Pool.name == pool_name, Pool.deleted_at.is_(None)))
    if pool is None:
        fail(f"no pool named {pool_name!r}")
    if email:
        user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None or not user.active:
            fail(f"no active user with email {email!r}")
    else:
        user = db.session.scalar(
            select(User).where(User.role == Role.ADMIN, User.active.is_(True)).order_by(User.id).limit(1)
        )
        if user is None:
            fail("no active admin to import as; pass --user EMAIL")
    now = clock.now()
    try:
        batch = importer.create_batch(
            db.session, user, pool, file, file.name, now, channel=channel, campaign=campaign
        )
        preview = importer.build(db.session, batch)
        importer.record_preview(db.session, batch, preview)
    except importer.ImportError_ as exc:
        db.session.rollback()
        fail(exc.message)
    mapped = ", ".join(f"{preview.headers[int(i)]}→{name}" for i, name in batch.mapping["columns"].items())
    click.echo(f"batch {batch.id}: {preview.total} rows; columns: {mapped or '(none recognised)'}")
    click.echo(
        f"  good {len(preview.prepared)} (new {preview.new_count}, existing {len(preview.duplicates)}), "
        f"errors in {len(preview.error_rows)} rows"
    )
    for error in preview.errors[:20]:
        click.echo(f"  row {error['row']} [{error['column']}]: {error['reason']}")
    if len(preview.errors) > 20:
        click.echo(
            f"  … {len(preview.errors) - 20} more errors (download: /intake/imports/{batch.id}/errors.xlsx)"
        )
    if dry_run:
        click.echo("dry run: nothing imported")
        return
    try:
        batch = importer.run(db.session, batch.id, user, now)
    except importer.ImportError_ as exc:
        fail(exc.message)
    click.echo(
        f"imported: created {batch.rows_created}, attached to existing {batch.rows_duplicate}, "
        f"rows with errors {batch.rows_error}"
    )


@crm_cli.command("rescore")
@click.option("--as-of", "as_of", help="ISO 8601 instant to score as of (default: now).")
def rescore_cmd(as_of: str | None) -> None:
    """Recompute every customer's score (decay), refresh the name-gram statistics."""
    from crm.intake import grams
    from crm.scoring import services

    try:
        now = clock.parse_iso(as_of) if as_of else clock.now()
    except ValueError as exc:
        fail(str(exc))
    result = services.recompute_all(db.session, now)
    n = grams.refresh_stats(db.session)
    db.session.commit()
    click.echo(
        f"scored {result['customers']} customers, {result['changed']} changed, "
        f"{result['crossed_hot']} became hot; {n} name grams counted"
    )


@crm_cli.command("rekey")
def rekey_cmd() -> None:
    """Recompute the stored company-name and email keys (after their rules changed; the migration that
    changed them runs this too). Safe to run again."""
    from crm.intake.grams import recompute_keys

    changed = recompute_keys(db.session)
    db.session.commit()
    click.echo(f"{changed} rows rekeyed")
