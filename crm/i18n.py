"""Translation tooling (``./dev i18n`` = ``python -m crm.i18n``): extract the Simplified Chinese msgids,
update ``crm/translations/<lang>/LC_MESSAGES/messages.po`` and compile the ``.mo`` files.

Decisions: msgids are the Chinese texts (the default language, no catalog needed for it); the compiled
``.mo`` files are committed, so a checkout or a wheel runs without a build step (a test checks that
they match the ``.po`` files); the ``.po`` files carry no source locations and are sorted, so parallel
branches merge without conflicts; fuzzy matching is off (a wrong guess is worse than Chinese).

``python -m crm.i18n check`` lists msgids without an English translation and exits 1 if there are any.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "crm" / "translations"
LANGUAGES = ["en"]
KEYWORDS = ["_", "_l", "gettext", "lazy_gettext", "ngettext:1,2", "N_"]


def _role_labels() -> Iterable[str]:
    from crm.models import Role

    return Role.LABELS.values()


def _label_tables() -> Iterable[str]:
    """Plain-string label tables that templates and services translate with ``_(table[key])``."""
    from crm.customers.services import SORTS
    from crm.customers.timeline import EVENT_LABELS
    from crm.followups.spotcheck import VERDICT_LABELS
    from crm.intake.services import SOURCE_LABELS
    from crm.models import HARD_TAG
    from crm.models.followups import Channel, ReminderKind
    from crm.models.recycle import RuleKind
    from crm.pool.manage import POOL_KINDS, PREV_OWNER_LABELS, STRATEGY_LABELS
    from crm.reminders.channels import KIND_LABELS
    from crm.reminders.services import CHANNEL_LABELS
    from crm.settings import store

    for module in ("crm.intake.config", "crm.pool.services", "crm.recycle.calendar", "crm.reminders.settings",
                   "crm.scoring.config"):  # fmt: skip
        importlib.import_module(module)  # they register their settings sections on import
    tables = (SORTS, EVENT_LABELS, VERDICT_LABELS, SOURCE_LABELS, Channel.LABELS, ReminderKind.LABELS,
              RuleKind.LABELS, POOL_KINDS, PREV_OWNER_LABELS, STRATEGY_LABELS, KIND_LABELS, CHANNEL_LABELS)  # fmt: skip
    yield HARD_TAG  # the system tag's name, shown translated
    yield from (str(s.label) for s in store.SECTIONS.values())
    for table in tables:
        yield from (str(v) for v in table.values())


# Msgids looked up at run time from data (e.g. ``_(Role.LABELS[role])``), which extraction cannot see.
# Features append a callable returning their strings.
EXTRA_MSGIDS: list[Callable[[], Iterable[str]]] = [_role_labels, _label_tables]


def _pybabel(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", *args], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pybabel {args[0]} failed")


def extract(pot: Path) -> None:
    """Write the template catalog of every msgid in ``crm/`` (plus ``EXTRA_MSGIDS``) to ``pot``."""
    from babel.messages.pofile import read_po, write_po

    keywords = [arg for k in KEYWORDS for arg in ("-k", k)]
    _pybabel("extract", "-F", "babel.cfg", *keywords, "--no-location", "--sort-output", "-o", str(pot),
             ".")  # fmt: skip
    with open(pot, "rb") as fh:
        catalog = read_po(fh)
    for source in EXTRA_MSGIDS:
        for msgid in source():
            if msgid not in catalog:
                catalog.add(msgid)
    with open(pot, "wb") as fh:
        write_po(fh, catalog, no_location=True, sort_output=True)


def update(pot: Path) -> None:
    for lang in LANGUAGES:
        po = TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po"
        if po.exists():
            _pybabel("update", "-i", str(pot), "-d", str(TRANSLATIONS), "-l", lang, "--no-fuzzy-matching",
                     "--ignore-obsolete")  # fmt: skip
        else:
            _pybabel("init", "-i", str(pot), "-d", str(TRANSLATIONS), "-l", lang)


def compile_catalogs() -> None:
    _pybabel("compile", "-d", str(TRANSLATIONS), "--statistics")


def missing(lang: str = "en") -> list[str]:
    """Msgids of the current sources that ``lang`` does not translate yet."""
    from babel.messages.pofile import read_po

    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / "messages.pot"
        extract(pot)
        with open(pot, "rb") as fh:
            wanted = [m.id for m in read_po(fh) if m.id]
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh)
    return [msgid for msgid in wanted if not (catalog.get(msgid) and catalog.get(msgid).string)]


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        todo = missing()
        for msgid in todo:
            print(f"untranslated: {msgid}")
        print(f"{len(todo)} msgid(s) without an English translation")
        return 1 if todo else 0
    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / "messages.pot"
        extract(pot)
        update(pot)
    compile_catalogs()
    todo = missing()
    print(f"catalogs updated and compiled; {len(todo)} msgid(s) still need an English translation")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
