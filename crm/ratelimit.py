"""Per-key budgets over a sliding window, counted in the database (``RateLimitHit`` rows): the same for
every web and worker process, no Redis needed. Old rows are pruned with the public form's
(``crm.intake.public.prune_hits``, kept two days).

Each hit is written on its own connection and committed at once, so it counts even when the request
that made it is read-only or rolls back — the row is the ledger of what was tried (``detail``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from crm.extensions import db
from crm.models import RateLimitHit

_HITS = RateLimitHit.__table__


def hit(key: str, window: timedelta, limit: int, now: datetime, detail: str | None = None) -> bool:
    """Record one use of ``key`` and say whether it is within ``limit`` uses per ``window`` (the use is
    recorded either way, so hammering past the limit keeps it spent)."""
    key = key[:120]
    with db.engine.begin() as conn:
        used = conn.scalar(
            select(func.count()).select_from(_HITS).where(_HITS.c.key == key, _HITS.c.at > now - window)
        )
        conn.execute(_HITS.insert().values(key=key, at=now, detail=(detail or "")[:500] or None))
    return (used or 0) < limit
