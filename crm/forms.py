"""Form helpers shared by every feature: select choices, local date-times, list fields."""

from __future__ import annotations

from collections.abc import Iterable

from wtforms import DateTimeLocalField
from wtforms.fields.choices import SelectChoice

from crm import clock


def choices(pairs: Iterable) -> list[SelectChoice]:
    """``[(value, label), …]`` or ``[value, …]`` → WTForms ``SelectChoice`` objects (labels stay lazy)."""
    out = []
    for item in pairs:
        if isinstance(item, SelectChoice):
            out.append(item)
        elif isinstance(item, tuple | list):
            out.append(SelectChoice(item[0], item[1]))
        else:
            out.append(SelectChoice(item, item))
    return out


def choice_values(field) -> list:
    """The values of a select field's choices."""
    return [c.value if isinstance(c, SelectChoice) else c[0] for c in (field.choices or [])]


class LocalDateTimeField(DateTimeLocalField):
    """A ``datetime-local`` input typed in the team's time zone; ``.utc`` gives the aware UTC instant.

    Also accepts an ISO 8601 value with an offset (API clients send those).
    """

    def __init__(self, label=None, validators=None, format="%Y-%m-%dT%H:%M", **kwargs):
        super().__init__(label, validators, format=[format, "%Y-%m-%dT%H:%M:%S"], **kwargs)

    def process_formdata(self, valuelist):
        if (
            valuelist
            and valuelist[0]
            and ("+" in valuelist[0][10:] or valuelist[0].endswith("Z") or valuelist[0][10:].count("-"))
        ):
            try:
                self.data = clock.local(clock.parse_iso(valuelist[0].replace("Z", "+00:00"))).replace(
                    tzinfo=None
                )
                return
            except ValueError:
                pass
        super().process_formdata(valuelist)

    def _value(self):
        if self.raw_data:
            return " ".join(self.raw_data)
        return self.data.strftime("%Y-%m-%dT%H:%M") if self.data else ""

    @property
    def utc(self):
        return clock.from_local(self.data)
