"""Small view helpers shared by the pool and customer screens (URLs, contact masking, merged ids)."""

from __future__ import annotations

from flask import flash, jsonify, redirect, request, url_for
from flask_babel import gettext as _
from sqlalchemy import bindparam, select

from crm.extensions import db
from crm.htmx import redirect_htmx
from crm.models import Customer

# A customer's ``merged_into_id`` (the customer that absorbed it in a merge, or None).
MERGED_INTO = select(Customer.merged_into_id).where(Customer.id == bindparam("cid"))


def customer_url(customer: Customer | int) -> str:
    customer_id = customer if isinstance(customer, int) else customer.id
    return url_for("customers.show", customer_id=customer_id)


def first_error(form) -> str:
    """The first validation message of a form, as plain text (lazy strings cannot go into JSON/flash)."""
    for errors in form.errors.values():
        if errors:
            return str(errors[0])
    return ""


def checks_merged(view):
    """Mark a view that finds out itself that its customer was merged (and then returns
    ``merged_redirect``), saving the look-up before the request (hot paths such as claiming)."""
    view.checks_merged = True
    return view


def merged_redirect(customer_id: int, winner: int):
    """The answer for a merged customer's id: the same request on the customer that absorbed it."""
    args = request.view_args or {}
    seen = {customer_id}
    while winner not in seen:  # follow a chain of merges to the customer that absorbed them all
        seen.add(winner)
        onward = db.session.scalar(MERGED_INTO, {"cid": winner})
        if onward is None:
            break
        winner = onward
    target = url_for(request.endpoint, **{**request.args.to_dict(), **args, "customer_id": winner})
    if request.path.startswith("/api/"):
        if request.method in ("GET", "HEAD"):
            response = jsonify(
                error="merged", message=_("该客户已合并到 #%(id)s。", id=winner), merged_into=winner
            )
            response.status_code = 301
            response.headers["Location"] = target
            return response
        return jsonify(error="merged", message=_("该客户已合并到 #%(id)s,请改用新编号。", id=winner),
                       merged_into=winner), 409  # fmt: skip
    if request.method in ("GET", "HEAD"):
        return redirect(target, 301)
    # An action (claim, release…) is not repeated on the winner: the user sees it first.
    flash(_("该客户已合并到另一条记录,已为你打开合并后的客户。"), "warning")
    return redirect_htmx(customer_url(winner))
