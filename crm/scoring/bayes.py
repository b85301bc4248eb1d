"""A naive-Bayes win probability learned from won/lost history (like Odoo's predictive lead scoring).

Training set: customers with at least one closed opportunity — "won" when any was won, else "lost".
Features: industry, region, job level, company-size band and channel. Each value's frequency among won
and lost customers (Laplace-smoothed, so an unseen value is neutral) multiplies the prior. With fewer
than ``MIN_PER_CLASS`` won or lost customers there is no estimate (None) rather than a noisy one.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crm.models import Customer, Opportunity

FEATURES = ("industry", "region", "job_level", "size_band", "channel")
MIN_PER_CLASS = 5


def size_band(size: int | None) -> str | None:
    if size is None:
        return None
    for minimum in (1000, 200, 50, 10):
        if size >= minimum:
            return f"{minimum}+"
    return "<10"


@dataclass
class WinModel:
    won: int
    lost: int
    # feature → value → Counter({"won": n, "lost": n})
    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)

    def probability(self, features: dict[str, str | None]) -> float:
        log_won = math.log(self.won / (self.won + self.lost))
        log_lost = math.log(self.lost / (self.won + self.lost))
        for name in FEATURES:
            value = features.get(name)
            if value is None:
                continue
            values = self.counts.get(name, {})
            k = len(values) + 1  # distinct values seen, plus one for "unseen"
            seen = values.get(value, Counter())
            log_won += math.log((seen["won"] + 1) / (self.won + k))
            log_lost += math.log((seen["lost"] + 1) / (self.lost + k))
        top = max(log_won, log_lost)
        p_won = math.exp(log_won - top)
        p_lost = math.exp(log_lost - top)
        return p_won / (p_won + p_lost)


def features_of(industry, region, job_level, company_size, channel) -> dict[str, str | None]:
    return {
        "industry": industry or None,
        "region": region or None,
        "job_level": job_level or None,
        "size_band": size_band(company_size),
        "channel": channel or None,
    }


_CACHE: dict[str, tuple[tuple, float, float, WinModel | None]] = {}
CACHE_SECONDS = 3600  # re-learn at least hourly
CHECK_SECONDS = 30  # look for new won/lost history at most this often


def _fingerprint(session: Session) -> tuple:
    """Changes whenever an opportunity is added or closes: cheap aggregates on indexed columns."""
    return tuple(
        session.execute(
            select(
                func.count(Opportunity.id),
                func.max(Opportunity.id),
                func.count(Opportunity.closed_at),
                func.max(Opportunity.closed_at),
            )
        ).one()
    )


def reset() -> None:
    """Forget the learned models (tests, or after a bulk change of history)."""
    _CACHE.clear()


def model(session: Session, *, fresh: bool = False) -> WinModel | None:
    """The trained model, cached per database: history is re-checked every ``CHECK_SECONDS`` and the model
    re-learned when it changed (or hourly). Scoring one lead must not re-learn from every closed deal."""
    key = str(session.get_bind().url)
    now = time.monotonic()
    cached = _CACHE.get(key)
    if not fresh and cached and now - cached[2] < CHECK_SECONDS and now - cached[1] < CACHE_SECONDS:
        return cached[3]
    fingerprint = _fingerprint(session)
    if not fresh and cached and cached[0] == fingerprint and now - cached[1] < CACHE_SECONDS:
        _CACHE[key] = (fingerprint, cached[1], now, cached[3])
        return cached[3]
    trained = train(session)
    _CACHE[key] = (fingerprint, now, now, trained)
    return trained


def train(session: Session) -> WinModel | None:
    """Learn from the database; one aggregate query over customers with closed opportunities."""
    won_flag = func.max(case((Opportunity.status == "won", 1), else_=0))
    rows = session.execute(
        select(
            Customer.industry,
            Customer.region,
            Customer.job_level,
            Customer.company_size,
            Customer.channel,
            won_flag.label("won"),
        )
        .join(Opportunity, Opportunity.customer_id == Customer.id)
        .where(Opportunity.status.in_(("won", "lost")), Customer.merged_into_id.is_(None))
        .group_by(Customer.id)
    ).all()
    won = sum(1 for r in rows if r.won)
    lost = len(rows) - won
    if won < MIN_PER_CLASS or lost < MIN_PER_CLASS:
        return None
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in rows:
        label = "won" if r.won else "lost"
        for name, value in features_of(r.industry, r.region, r.job_level, r.company_size, r.channel).items():
            if value is not None:
                counts[name][value][label] += 1
    return WinModel(won=won, lost=lost, counts={k: dict(v) for k, v in counts.items()})
