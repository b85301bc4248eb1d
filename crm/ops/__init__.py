"""Running the CRM for real: backups and restore, heartbeats, health, metrics, request logs, ``crm doctor``."""

from flask import Flask


def install_ops(app: Flask) -> None:
    """Request hooks of ``crm.ops``: request id and log line, request metrics, the web heartbeat."""
    from crm.ops.logs import install_mask, install_request_log
    from crm.ops.metrics import install_request_metrics
    from crm.ops.runs import install_web_heartbeat

    install_request_log(app)
    install_request_metrics(app)
    install_web_heartbeat(app)
    install_static_versions(app)
    install_mask()


def install_static_versions(app: Flask) -> None:
    """``url_for('static', …)`` adds ``?v=<content hash>``, so nginx (deploy/nginx) can cache static files for
    a year: a new release changes the URL of every file it changed."""
    import hashlib
    from pathlib import Path

    versions: dict[str, str] = {}

    @app.url_defaults
    def _static_version(endpoint: str, values: dict) -> None:
        if endpoint != "static" or "filename" not in values or "v" in values:
            return
        name = values["filename"]
        if name not in versions or app.debug:
            path = Path(app.static_folder or "") / name
            try:
                versions[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            except OSError:
                versions[name] = ""
        if versions[name]:
            values["v"] = versions[name]
