"""``crm doctor`` flags a deliberately broken set-up and passes a sound one."""

from __future__ import annotations

import pytest

from crm import create_app
from crm.extensions import db
from crm.ops import backup


@pytest.fixture
def doctor(app_config, fresh_db_url, tmp_path, monkeypatch):
    def run(env: dict[str, str], **config):
        for name in ("SECRET_KEY", "CRM_TRUSTED_PROXIES", "TZ"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app = create_app(
            {
                **app_config,
                "SQLALCHEMY_DATABASE_URI": fresh_db_url,
                "CRM_BACKUP_DIR": str(tmp_path / "bk"),
                **config,
            }
        )
        with app.app_context():
            runner = app.test_cli_runner()
            if config.pop("migrate", True):
                assert runner.invoke(args=["crm", "init-db"]).exit_code == 0
                backup.backup()
            result = runner.invoke(args=["crm", "doctor"])
            db.session.remove()
            db.engine.dispose()
        return result

    return run


GOOD_KEY = "9f" * 32


def test_doctor_passes_a_sound_set_up(doctor):
    result = doctor(
        {"SECRET_KEY": GOOD_KEY, "CRM_TRUSTED_PROXIES": "1", "TZ": "Asia/Shanghai"}, SECRET_KEY=GOOD_KEY
    )
    assert result.exit_code == 0, result.output
    assert "PROBLEM" not in result.output and "no problems found" in result.output


def test_doctor_flags_a_broken_set_up(doctor):
    result = doctor(
        {"SECRET_KEY": "dev", "CRM_TRUSTED_PROXIES": "nginx"},
        SECRET_KEY="dev", REDIS_URL="redis://127.0.0.1:1/0", CRM_TIMEZONE="Mars/Olympus", migrate=False,
    )  # fmt: skip
    assert result.exit_code == 1
    out = result.output
    for expected in (
        "PROBLEM  SECRET_KEY: too short",
        "PROBLEM  Redis: ConnectionError",
        "PROBLEM  time zone: CRM_TIMEZONE='Mars/Olympus'",
        "PROBLEM  migrations: database at none",
        "PROBLEM  backups: no backup in",
        "PROBLEM  trusted proxies: CRM_TRUSTED_PROXIES='nginx'",
    ):
        assert expected in out, out


def test_doctor_flags_a_missing_secret_key_and_redis_url(doctor):
    result = doctor({}, REDIS_URL=None)
    assert result.exit_code == 1
    assert "PROBLEM  SECRET_KEY: not set in the environment" in result.output
    assert "PROBLEM  Redis: REDIS_URL is not set" in result.output
    assert "warning  trusted proxies" in result.output
