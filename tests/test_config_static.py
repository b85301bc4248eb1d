"""Configuration defaults from the environment, and the vendored htmx pinned by hash."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from crm import config

STATIC = Path(__file__).resolve().parent.parent / "crm" / "static"
TEMPLATES = Path(__file__).resolve().parent.parent / "crm" / "templates"


def test_secret_key_is_generated_once_into_the_instance_folder_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    first = config.build_config(tmp_path)["SECRET_KEY"]
    second = config.build_config(tmp_path)["SECRET_KEY"]
    assert len(first) >= 64 and first == second
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == first
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert config.build_config(tmp_path / "other")["SECRET_KEY"] != first


def test_secret_key_from_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "from-env")
    assert config.build_config(tmp_path)["SECRET_KEY"] == "from-env"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    "env,expected",
    [
        ("postgres://u:p@db:5432/crm", "postgresql+psycopg://u:p@db:5432/crm"),
        ("postgresql://u@127.0.0.1/crm", "postgresql+psycopg://u@127.0.0.1/crm"),
        ("postgresql+psycopg://u@h/crm", "postgresql+psycopg://u@h/crm"),
        ("  postgres://h/crm  ", "postgresql+psycopg://h/crm"),
    ],
)
def test_database_url_is_normalised_to_psycopg3(tmp_path, monkeypatch, env, expected):
    monkeypatch.setenv("DATABASE_URL", env)
    assert config.database_url(tmp_path) == expected


def test_without_database_url_the_database_is_sqlite_in_the_instance_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert config.database_url(tmp_path) == f"sqlite:///{tmp_path / 'crm.sqlite3'}"


def test_defaults_timezone_and_redis(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_TIMEZONE", raising=False)
    monkeypatch.setenv("REDIS_URL", " ")
    cfg = config.build_config(tmp_path)
    assert cfg["CRM_TIMEZONE"] == "Asia/Shanghai"
    assert cfg["REDIS_URL"] is None  # → embedded server
    monkeypatch.setenv("CRM_TIMEZONE", "Asia/Tokyo")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    cfg = config.build_config(tmp_path)
    assert (cfg["CRM_TIMEZONE"], cfg["REDIS_URL"]) == ("Asia/Tokyo", "redis://cache:6379/2")


def _sha384(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def test_vendored_htmx_matches_the_pinned_hash_everywhere():
    actual = _sha384((STATIC / "htmx.min.js").read_bytes())
    vendored = (STATIC / "VENDORED.txt").read_text()
    base = (TEMPLATES / "base.html").read_text()
    assert actual in vendored
    assert f'integrity="{actual}"' in base
    assert re.search(r"htmx 2\.0\.\d+", vendored)
    assert 'version:"2.0.' in (STATIC / "htmx.min.js").read_text()[:20000].replace(" ", "")


def test_served_htmx_is_the_pinned_file(client):
    resp = client.get("/static/htmx.min.js")
    assert resp.status_code == 200
    assert _sha384(resp.get_data()) in (STATIC / "VENDORED.txt").read_text()
