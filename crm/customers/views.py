"""Small view helpers shared by the pool and customer screens (URLs, contact masking)."""

from __future__ import annotations

from flask import url_for

from crm.models import Customer


def customer_url(customer: Customer | int) -> str:
    customer_id = customer if isinstance(customer, int) else customer.id
    return url_for("customers.show", customer_id=customer_id)


def first_error(form) -> str:
    """The first validation message of a form, as plain text (lazy strings cannot go into JSON/flash)."""
    for errors in form.errors.values():
        if errors:
            return str(errors[0])
    return ""
