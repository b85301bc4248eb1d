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
    install_mask()
