"""Running the CRM for real: backups and restore, heartbeats, health, metrics, request logs, ``crm doctor``."""
