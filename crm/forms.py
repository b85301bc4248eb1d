"""Form helpers shared by every feature: the form base classes, select choices, local date-times."""

from __future__ import annotations

from collections.abc import Iterable

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm as _FlaskForm
from wtforms import DateTimeLocalField, IntegerField, PasswordField, StringField, TextAreaField
from wtforms import Form as _Form
from wtforms.fields.choices import SelectChoice
from wtforms.fields.core import UnboundField
from wtforms.meta import DefaultMeta
from wtforms.validators import NumberRange

from crm import clock
from crm.inputguard import DB_INT_MAX, DB_INT_MIN, clean_line, clean_text


def _bind_guarded(meta, form, unbound_field, options):
    """Every text field drops control characters (single-line ones also line breaks); every integer
    field stays within the database's range. One rule for all forms, web and API alike."""
    cls = unbound_field.field_class
    args, kwargs = list(unbound_field.args), dict(unbound_field.kwargs)
    if issubclass(cls, StringField) and not issubclass(cls, PasswordField):  # passwords are taken as typed
        clean = clean_text if issubclass(cls, TextAreaField) else clean_line
        if len(args) >= 3:  # (label, validators, filters, …) given by position
            args[2] = (clean, *args[2])
        else:
            kwargs["filters"] = (clean, *(kwargs.get("filters") or ()))
    elif issubclass(cls, IntegerField):
        bound = NumberRange(DB_INT_MIN, DB_INT_MAX, _l("数值超出允许范围。"))
        if len(args) >= 2:
            args[1] = [*(args[1] or ()), bound]
        else:
            kwargs["validators"] = [*(kwargs.get("validators") or ()), bound]
    guarded = UnboundField(cls, *args, name=unbound_field.name, **kwargs)
    guarded.creation_counter = unbound_field.creation_counter
    return guarded.bind(form=form, **options)


class FlaskForm(_FlaskForm):
    """The base of every page and API form (CSRF from Flask-WTF, input cleaning from ``_bind_guarded``)."""

    class Meta(_FlaskForm.Meta):
        def bind_field(self, form, unbound_field, options):
            return _bind_guarded(self, form, unbound_field, options)


class Form(_Form):
    """The base of sub-forms (``FormField``/``FieldList`` rows): the same input cleaning, no CSRF."""

    class Meta(DefaultMeta):
        def bind_field(self, form, unbound_field, options):
            return _bind_guarded(self, form, unbound_field, options)


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
