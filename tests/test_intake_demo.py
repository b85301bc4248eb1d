"""seed-demo with the intake seeder: keys, grams, real scores, behaviour, conflicts, a web form."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.extensions import db
from crm.models import BehaviorEvent, Customer, DuplicateConflict, LeadForm, NameGram


def test_seed_demo_gives_intake_and_scoring_data(app):
    result = app.test_cli_runner().invoke(args=["crm", "seed-demo", "--customers", "60"])
    assert result.exit_code == 0, result.output
    customers = list(db.session.scalars(select(Customer)))
    assert all(c.name_key and c.phone_key for c in customers)
    assert db.session.scalar(select(func.count(func.distinct(NameGram.customer_id)))) == len(customers)
    assert db.session.scalar(select(func.count()).select_from(BehaviorEvent)) > 0
    assert (
        db.session.scalar(
            select(func.count()).select_from(DuplicateConflict).where(DuplicateConflict.status == "open")
        )
        >= 1
    )
    assert db.session.scalar(select(LeadForm.slug)) == "website"
    for c in customers:
        assert sum(line["p"] for line in c.score_breakdown["lines"]) == c.score
