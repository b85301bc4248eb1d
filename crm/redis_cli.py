"""``flask --app app crm redis-start | redis-stop | redis-status``: the embedded Redis server's lifecycle.

With ``REDIS_URL`` set there is nothing to start or stop: the commands say so and exit 0 (status pings it).
"""

from __future__ import annotations

import click
from flask import current_app

from crm import embedded_redis
from crm.cli import crm_cli, fail
from crm.queues import safe_url


def _external() -> str | None:
    return current_app.config.get("REDIS_URL")


@crm_cli.command("redis-start")
def redis_start() -> None:
    """Start the embedded Redis (unless REDIS_URL is set) and print its URL."""
    if _external():
        click.echo(f"REDIS_URL is set ({safe_url(_external())}); no embedded server needed")
        return
    try:
        url = embedded_redis.ensure_running(current_app.instance_path)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    click.echo(f"embedded Redis running at {url} (pid {embedded_redis.pid(current_app.instance_path)})")


@crm_cli.command("redis-stop")
def redis_stop() -> None:
    """Stop the embedded Redis (its data is saved to instance/redis/dump.rdb first)."""
    if _external():
        click.echo(f"REDIS_URL is set ({safe_url(_external())}); no embedded server to stop")
        return
    try:
        stopped = embedded_redis.stop(current_app.instance_path)
    except RuntimeError as exc:
        fail(str(exc))
    click.echo("embedded Redis stopped" if stopped else "embedded Redis was not running")


@crm_cli.command("redis-status")
def redis_status() -> None:
    """Say whether the app's Redis answers; exit 1 when it does not."""
    import redis

    from crm.queues import connect

    url = _external() or embedded_redis.url_for(current_app.instance_path)
    try:
        connect(url).ping()
    except (redis.RedisError, OSError) as exc:
        click.echo(f"Redis at {safe_url(url)} is not answering: {exc}")
        raise SystemExit(1) from exc
    extra = "" if _external() else f" (embedded, pid {embedded_redis.pid(current_app.instance_path)})"
    click.echo(f"Redis at {safe_url(url)} answers{extra}")
