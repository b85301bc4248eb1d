"""Domain events (blinker signals) so features react to each other without importing each other.

Senders pass the session and ``now``; receivers must not commit (the sender's transaction owns it).
- ``followup_saved``(session, followup, now): a real touch was recorded (scoring, reminders…).
- ``followup_invalidated``(session, followup, now): a spot check marked a follow-up fake.
- ``stage_changed``(session, customer, change, now): a customer/opportunity moved stage.
- ``deal_won``(session, customer, opportunity, now): a contract was signed (protection starts).
- ``customer_created``(session, customer, now): a new lead/customer arrived (scoring, routing).
- ``ownership_changed``(session, customer_ids, now[, id_query]): claims, releases, assignments, recycles. A
  set-based sender (the recycle sweep, ~100k customers) also passes ``id_query``, a SELECT of the same ids,
  which subscribers should prefer over the list (a 100k-element IN list exceeds PostgreSQL's 65,535 bound
  parameters).
- ``score_changed``(session, customer, old, new, now): the score moved (hot crossings, routing).
"""

from blinker import Namespace

_signals = Namespace()

followup_saved = _signals.signal("followup-saved")
followup_invalidated = _signals.signal("followup-invalidated")
stage_changed = _signals.signal("stage-changed")
deal_won = _signals.signal("deal-won")
customer_created = _signals.signal("customer-created")
ownership_changed = _signals.signal("ownership-changed")
score_changed = _signals.signal("score-changed")
