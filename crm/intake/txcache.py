"""Memos for rows an intake reads on every call but that almost never change.

Per transaction (``memo``): cleared on commit/rollback.

Per process (``process_memo``): the settings sections intake and scoring read, the default lead pool's id
and the first pipeline stage are kept for ``PROCESS_SECONDS`` per engine (an app's engine, so a test's
fresh app never sees another test's values). A flush in this process that writes a ``Setting``, ``Pool``
or ``Stage`` row drops them all when its transaction ends (and the transaction itself reads past the
cache), so a change made here is seen by the next request at once; other processes see it within
``PROCESS_SECONDS``.
"""

from __future__ import annotations

import copy
import pickle
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

T = TypeVar("T")
_KEY = "crm_tx_cache"
_DIRTY = "crm_process_cache_dirty"
PROCESS_SECONDS = 10.0


def _real(session) -> Session:
    return session() if callable(session) and not isinstance(session, Session) else session


def memo(session, key: str, load: Callable[[], T]) -> T:
    """``load()`` once per transaction of ``session`` (a scoped session is resolved to the real one)."""
    cache = _real(session).info.setdefault(_KEY, {})
    if key not in cache:
        cache[key] = load()
    return cache[key]


READ_TOGETHER = ("intake", "scoring")


def _load_sections(session) -> dict:
    from sqlalchemy import select

    from crm.models import Setting
    from crm.settings import store

    names = [n for n in READ_TOGETHER if n in store.SECTIONS]
    stored = set(session.scalars(select(Setting.section).where(Setting.section.in_(names))))
    return {
        n: store.get(session, n) if n in stored else copy.deepcopy(store.SECTIONS[n].defaults) for n in names
    }


def settings_section(session, name: str) -> dict:
    """A settings section, read once per transaction (a private copy: callers may change it) from a copy
    kept per process — the intake and scoring sections in one query (an intake needs both; sections never
    saved have no row, and those are the defaults)."""
    from crm.settings import store

    if name not in READ_TOGETHER:
        return memo(session, f"settings:{name}", lambda: store.get(session, name))
    sections = memo(
        session,
        "settings",
        lambda: _copy(process_memo(session, "settings", lambda: _load_sections(session))),
    )
    return sections[name]


def _copy(value: T) -> T:
    """A deep copy of JSON-like settings (a pickle round trip: a third of ``copy.deepcopy``'s time)."""
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


_PROCESS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine → key → (read at, value)


def process_memo(session, key: str, load: Callable[[], T], seconds: float = PROCESS_SECONDS) -> T:
    """``load()`` at most every ``seconds`` per process and engine, for rows that almost never change.
    Values are shared: callers must not change them. A transaction that wrote such rows loads afresh."""
    real = _real(session)
    if real.info.get(_DIRTY):
        return load()
    cache = _PROCESS.setdefault(real.get_bind(), {})
    hit = cache.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > seconds:
        hit = cache[key] = (now, load())
    return hit[1]  # type: ignore[return-value]


def forget(session, key: str | None = None) -> None:
    real = _real(session)
    if key is None:
        real.info.pop(_KEY, None)
    else:
        real.info.get(_KEY, {}).pop(key, None)


def forget_process() -> None:
    """Drop every per-process memo (all engines)."""
    _PROCESS.clear()


def _cached_rows() -> tuple[type, ...]:
    from crm.models import Pool, Setting, Stage

    return (Setting, Pool, Stage)


@event.listens_for(Session, "before_flush")
def _mark_dirty(session, flush_context, instances) -> None:
    kinds = _cached_rows()
    for objs in (session.new, session.dirty, session.deleted):
        if any(isinstance(obj, kinds) for obj in objs):
            session.info[_DIRTY] = True
            session.info.pop(_KEY, None)  # this transaction reads its own changes from here on
            _PROCESS.clear()  # before this transaction's own reads, and for the other sessions here
            return


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _clear(session, *args) -> None:
    session.info.pop(_KEY, None)
    if session.info.pop(_DIRTY, None):
        _PROCESS.clear()
