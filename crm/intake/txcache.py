"""A per-transaction memo on the session: settings sections and the first pipeline stage are read once per
transaction instead of once per use (an intake touches them several times). Cleared on commit/rollback,
so a change committed by anyone is seen by the next transaction."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

T = TypeVar("T")
_KEY = "crm_tx_cache"


def memo(session, key: str, load: Callable[[], T]) -> T:
    """``load()`` once per transaction of ``session`` (a scoped session is resolved to the real one)."""
    real = session() if callable(session) and not isinstance(session, Session) else session
    cache = real.info.setdefault(_KEY, {})
    if key not in cache:
        cache[key] = load()
    return cache[key]


READ_TOGETHER = ("intake", "scoring")


def settings_section(session, name: str) -> dict:
    """A settings section, read once per transaction — and the intake and scoring sections in one query
    (an intake needs both; sections never saved have no row, and those are the defaults)."""
    from sqlalchemy import select

    from crm.models import Setting
    from crm.settings import store

    def load() -> dict:
        names = [n for n in READ_TOGETHER if n in store.SECTIONS]
        stored = set(session.scalars(select(Setting.section).where(Setting.section.in_(names))))
        return {
            n: store.get(session, n) if n in stored else copy.deepcopy(store.SECTIONS[n].defaults)
            for n in names
        }

    if name not in READ_TOGETHER:
        return memo(session, f"settings:{name}", lambda: store.get(session, name))
    return memo(session, "settings", load)[name]


_PROCESS: dict[tuple, tuple[float, object]] = {}


def process_memo(session, key: str, load: Callable[[], T], seconds: float) -> T:
    """``load()`` at most every ``seconds`` per process and database, for rows that almost never change
    (the first pipeline stage)."""
    real = session() if callable(session) and not isinstance(session, Session) else session
    full = (str(real.get_bind().url), key)
    hit = _PROCESS.get(full)
    now = time.monotonic()
    if hit is None or now - hit[0] > seconds:
        hit = _PROCESS[full] = (now, load())
    return hit[1]  # type: ignore[return-value]


def forget(session, key: str | None = None) -> None:
    real = session() if callable(session) and not isinstance(session, Session) else session
    if key is None:
        real.info.pop(_KEY, None)
    else:
        real.info.get(_KEY, {}).pop(key, None)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _clear(session, *args) -> None:
    session.info.pop(_KEY, None)
