"""The embedded Redis: its own daemon under instance/redis, started once, shared, outliving its starter."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from crm import embedded_redis


@pytest.fixture
def instance(tmp_path_factory):
    # A short path of its own, so the socket sits in instance/redis as in production.
    path = tmp_path_factory.mktemp("inst")
    yield path
    embedded_redis.stop(path)


def test_first_call_starts_a_daemon_and_second_call_reuses_it(instance):
    assert not embedded_redis.is_running(instance)
    url = embedded_redis.ensure_running(instance)
    first_pid = embedded_redis.pid(instance)
    assert url == f"unix://{instance.resolve() / 'redis' / 'redis.sock'}"
    assert first_pid is not None
    redis.Redis.from_url(url).set("crm-test:shared", "1")

    assert embedded_redis.ensure_running(instance) == url
    assert embedded_redis.pid(instance) == first_pid
    assert redis.Redis.from_url(url).get("crm-test:shared") == b"1"
    assert (instance / "redis" / "redis.log").exists()


def test_server_outlives_the_process_that_started_it(instance):
    code = (
        "import sys; from crm import embedded_redis; "
        "print(embedded_redis.ensure_running(sys.argv[1])); print(embedded_redis.pid(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(instance)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    url, started_pid = done.stdout.split()
    # The starter has exited; the server is still there, and it is not a child of this test process.
    assert embedded_redis.is_running(instance)
    assert embedded_redis.pid(instance) == int(started_pid)
    assert redis.Redis.from_url(url).ping()
    assert embedded_redis.ensure_running(instance) == url
    assert embedded_redis.pid(instance) == int(started_pid)


def test_stop_ends_the_server_and_says_when_nothing_ran(instance):
    embedded_redis.ensure_running(instance)
    server_pid = embedded_redis.pid(instance)
    assert embedded_redis.stop(instance) is True
    assert not embedded_redis.is_running(instance)
    assert not embedded_redis._alive(server_pid)
    assert embedded_redis.stop(instance) is False


def test_concurrent_starters_share_one_server(instance):
    code = "import sys; from crm import embedded_redis; embedded_redis.ensure_running(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(instance)]) for _ in range(3)]
    assert all(p.wait(timeout=30) == 0 for p in procs)
    # Every server start writes this line to the shared log: exactly one server was started.
    log = (instance / "redis" / "redis.log").read_text()
    assert log.count("is starting") == 1
    assert embedded_redis.is_running(instance)


def test_a_deep_instance_folder_gets_a_short_socket_path(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    sock = embedded_redis.socket_path(deep)
    assert len(str(sock)) <= 100
    assert sock == embedded_redis.socket_path(deep)  # every process computes the same one
    try:
        assert embedded_redis.ensure_running(deep) == f"unix://{sock}"
    finally:
        embedded_redis.stop(deep)


def test_cli_starts_reports_and_stops_the_server(tmp_path_factory, monkeypatch):
    from crm import create_app

    instance = tmp_path_factory.mktemp("cli")
    app = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": None, "SECRET_KEY": "x"})
    runner = app.test_cli_runner()
    try:
        started = runner.invoke(args=["crm", "redis-start"])
        assert started.exit_code == 0, started.output
        assert "embedded Redis running at unix://" in started.output
        status = runner.invoke(args=["crm", "redis-status"])
        assert status.exit_code == 0 and "answers" in status.output
    finally:
        stopped = runner.invoke(args=["crm", "redis-stop"])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    status = runner.invoke(args=["crm", "redis-status"])
    assert status.exit_code == 1 and "not answering" in status.output
