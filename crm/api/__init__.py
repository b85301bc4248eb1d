"""JSON API under ``/api/v1`` (SPEC §9): bearer tokens, JSON errors, and the OpenAPI document.

Feature modules register their endpoints on ``bp`` and describe them with ``@doc``; this package
imports them at the bottom so ``from crm.api import bp`` brings the whole API.
"""

from __future__ import annotations

import importlib

from crm.api.core import bp

# Endpoint modules, by import path.
ENDPOINT_MODULES = [
    "crm.api.meta",
    "crm.api.settings",
    "crm.api.pools",
    "crm.api.customers",
    "crm.api.users",
    "crm.api.recycle",
    "crm.api.followups",
    "crm.api.inbox",
    "crm.api.intake",
    "crm.api.pipeline",
    "crm.api.org",
    "crm.api.conflicts",
    "crm.api.notices",
]

for _module in ENDPOINT_MODULES:
    importlib.import_module(_module)

__all__ = ["bp"]
