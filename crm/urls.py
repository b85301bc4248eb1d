"""Where the app may send a browser: one rule for every ``next`` parameter, redirect and ``HX-Redirect``.

Only a local path of this site passes: it starts with one ``/``, and neither it nor its percent-decoded
forms carry a scheme, a host, a backslash (browsers read ``/\\evil.example`` as ``//evil.example``), a
control character or a leading ``//``. Everything else falls back to a default.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MAX_LENGTH = 2000


def _is_local_path(text: str) -> bool:
    if not text.startswith("/") or text.startswith("//"):
        return False
    if "\\" in text or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def is_safe_local(target: object) -> bool:
    """True when ``target`` is a path on this site, also once (and twice) percent-decoded."""
    if not isinstance(target, str) or not target or len(target) > MAX_LENGTH:
        return False
    seen = target
    for _ in range(3):  # a browser decodes once; decoding further only makes the check stricter
        if not _is_local_path(seen):
            return False
        decoded = unquote(seen)
        if decoded == seen:
            return True
        seen = decoded
    return _is_local_path(seen)


def safe_next(target: object, default: str | None = None) -> str:
    """``target`` if it is a safe local path, else ``default`` (the workbench when not given)."""
    if is_safe_local(target):
        return target  # type: ignore[return-value]
    if default is not None and is_safe_local(default):
        return default
    from flask import url_for

    return url_for("main.home")
