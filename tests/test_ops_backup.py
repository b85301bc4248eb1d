"""``crm backup`` / ``crm restore``: a consistent copy while the app runs, the newest N kept, restore refused
while the app is alive, and a round trip that finds exactly the backed-up state (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from crm import clock, create_app
from crm.extensions import db
from crm.models import Customer, OpsJob
from crm.ops import backup
from crm.ops.runs import beat
from tests.factories import Factory


@pytest.fixture
def live(app_config, fresh_db_url, tmp_path):
    """An app on a database built by the migrations, as in production, with its backups under tmp_path."""
    app = create_app(
        {**app_config, "SQLALCHEMY_DATABASE_URI": fresh_db_url, "CRM_BACKUP_DIR": str(tmp_path / "bk")}
    )
    runner = app.test_cli_runner()
    with app.app_context():
        assert runner.invoke(args=["crm", "init-db"]).exit_code == 0
        yield app, runner
        db.session.remove()
        db.engine.dispose()


def _state() -> dict[str, list[tuple]]:
    """Every row of every table but the operations' own bookkeeping."""
    rows = {}
    for table in db.metadata.sorted_tables:
        if table.name.startswith("ops_"):
            continue
        order = [c for c in table.primary_key.columns] or list(table.columns)
        rows[table.name] = [tuple(r) for r in db.session.execute(select(table).order_by(*order))]
    db.session.rollback()
    return rows


def _invoke(runner, *args):
    result = runner.invoke(args=["crm", *args])
    db.session.remove()
    return result


def test_restore_brings_back_exactly_the_backed_up_state(live):
    app, runner = live
    make = Factory(db.session)
    pool = make.pool()
    pool_id = pool.id
    kept = [make.customer(pool, name=f"备份前公司{i}").id for i in range(3)]
    before = _state()

    result = _invoke(runner, "backup")
    assert result.exit_code == 0, result.output
    (made,) = backup.list_backups()
    assert made.path.name.startswith("crm-") and "backup written" in result.output

    make = Factory(db.session)
    make.customer(db.session.get(type(pool), pool_id), name="备份后公司")
    db.session.execute(text("UPDATE customers SET name = '改过的名字' WHERE id = :id"), {"id": kept[0]})
    db.session.commit()
    assert _state() != before

    result = _invoke(runner, "restore", str(made.path))
    assert result.exit_code == 0, result.output
    assert _state() == before
    assert db.session.scalar(select(Customer.name).where(Customer.id == kept[0])) == "备份前公司0"
    # The bookkeeping is the backup's too (the backup's own record came after it); the restore is recorded.
    assert db.session.get(OpsJob, "restore").ok


def test_restore_is_refused_while_a_web_process_is_alive_unless_forced(live):
    app, runner = live
    assert _invoke(runner, "backup").exit_code == 0
    (made,) = backup.list_backups()
    beat("web", pid=424242, host="web-1")

    refused = _invoke(runner, "restore", str(made.path))
    assert refused.exit_code != 0
    assert "the app is running (web web-1:424242)" in refused.output

    forced = _invoke(runner, "restore", str(made.path), "--force")
    assert forced.exit_code == 0, forced.output


def test_a_heartbeat_older_than_the_alive_window_does_not_block_restore(live):
    app, runner = live
    assert _invoke(runner, "backup").exit_code == 0
    (made,) = backup.list_backups()
    beat("worker", pid=1, host="old-host")
    db.session.execute(
        text("UPDATE ops_heartbeats SET seen_at = :t"),
        {"t": (clock.now() - timedelta(minutes=5)).replace(tzinfo=None)},
    )
    db.session.commit()
    assert _invoke(runner, "restore", str(made.path)).exit_code == 0


def test_only_the_newest_backups_are_kept(live, tmp_path):
    app, runner = live
    start = clock.now()
    for minutes in range(4):
        backup.backup(tmp_path / "keep", keep=2, now=start + timedelta(minutes=minutes))
    names = [b.path.name for b in backup.list_backups(tmp_path / "keep")]
    assert len(names) == 2
    assert (
        names[0]
        == f"crm-{(start + timedelta(minutes=3)).strftime('%Y%m%d-%H%M%S')}{backup.SUFFIXES[db.engine.dialect.name]}"
    )


def test_restore_of_a_missing_or_wrong_file_says_why(live, tmp_path):
    app, runner = live
    missing = _invoke(runner, "restore", str(tmp_path / "nope.sqlite3"))
    assert missing.exit_code != 0 and "no backup file" in missing.output
    wrong = tmp_path / "crm-20260101-000000.txt"
    wrong.write_text("hello")
    result = _invoke(runner, "restore", str(wrong))
    assert result.exit_code != 0 and "is not a" in result.output


def test_postgres_tools_missing_is_a_clear_message(monkeypatch):
    monkeypatch.setattr(backup.shutil, "which", lambda name: None)
    with pytest.raises(
        backup.BackupError, match="pg_dump is not installed: install the PostgreSQL client tools"
    ):
        backup._tool("pg_dump")


def test_nightly_job_backs_up_sqlite_and_records_the_result(live):
    app, runner = live
    if db.engine.dialect.name != "sqlite":
        pytest.skip("nightly backups are on by default only on SQLite")
    from workers.jobs import nightly_backup

    summary = nightly_backup()
    assert backup.latest_backup().path.name in summary
    job = db.session.get(OpsJob, "backup")
    assert job.ok and job.runs == 1


def test_nightly_job_is_off_by_default_on_postgresql(live):
    app, runner = live
    if db.engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only")
    from workers.jobs import nightly_backup

    assert nightly_backup().startswith("skipped")
    assert backup.list_backups() == []
