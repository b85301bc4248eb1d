"""Extension points for screens several features contribute to.

- ``CUSTOMER_PANELS``: sections of the customer page (recycle due time, score breakdown, opportunities…)
- ``CUSTOMER_JSON``: extra keys of ``GET /api/v1/customers/<id>``
- ``HOME_PANELS``: sections of the workbench for some roles (pending extension requests…)

Each feature registers at import time of its routes module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class Panel:
    order: int
    name: str = field(compare=False)
    template: str = field(compare=False)
    # (session, customer_or_None, user) -> template context, or None to hide the panel
    context: Callable = field(compare=False)
    min_role: str = field(default="rep", compare=False)


CUSTOMER_PANELS: list[Panel] = []
HOME_PANELS: list[Panel] = []
# (session, customer, user) -> dict merged into the customer's JSON
CUSTOMER_JSON: list[Callable] = []


def register_customer_panel(order: int, name: str, template: str, context: Callable) -> None:
    CUSTOMER_PANELS[:] = sorted(
        [p for p in CUSTOMER_PANELS if p.name != name] + [Panel(order, name, template, context)]
    )


def register_home_panel(
    order: int, name: str, template: str, context: Callable, min_role: str = "rep"
) -> None:
    HOME_PANELS[:] = sorted(
        [p for p in HOME_PANELS if p.name != name] + [Panel(order, name, template, context, min_role)]
    )


def register_customer_json(fn: Callable) -> None:
    if fn not in CUSTOMER_JSON:
        CUSTOMER_JSON.append(fn)


def render_panels(panels: list[Panel], session, subject, user) -> list[tuple[Panel, dict]]:
    """The panels visible to ``user`` with their contexts (a panel whose context is None is skipped)."""
    from crm.models import Role

    shown = []
    for panel in panels:
        if Role.RANK.get(user.role, 0) < Role.RANK[panel.min_role]:
            continue
        ctx = panel.context(session, subject, user)
        if ctx is not None:
            shown.append((panel, ctx))
    return shown


def rendered_panels(panels: list[Panel], session, subject, user, **extra) -> list[tuple[Panel, object]]:
    """The visible panels rendered to HTML. A panel template sees its context both as ``ctx`` and as
    top-level names (plus ``extra``, e.g. ``customer``), whichever it prefers."""
    from flask import render_template
    from markupsafe import Markup

    return [
        (panel, Markup(render_template(panel.template, **(extra | ctx), ctx=ctx)))
        for panel, ctx in render_panels(panels, session, subject, user)
    ]
