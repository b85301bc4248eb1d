"""The scoring report: does each rep spend follow-ups on hot customers? (SPEC §4, §8)

Per rep over a period: the share of their follow-ups made on hot customers (``FollowUp.score_at`` — the
score when the follow-up was recorded — at or above the hot threshold) against the share of hot customers
among those they hold now. A focus index above 1 means they favour hot customers. Two aggregate queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crm.models import Customer, FollowUp, Role, User
from crm.permissions import team_member_ids
from crm.scoring import config


@dataclass
class RepRow:
    user_id: int
    name: str
    followups: int
    hot_followups: int
    held: int
    hot_held: int

    @property
    def followup_share(self) -> float | None:
        return self.hot_followups / self.followups if self.followups else None

    @property
    def holding_share(self) -> float | None:
        return self.hot_held / self.held if self.held else None

    @property
    def focus(self) -> float | None:
        """Hot share of effort ÷ hot share of the book (None when either is undefined)."""
        if self.followup_share is None or not self.holding_share:
            return None
        return self.followup_share / self.holding_share


def hot_share(
    session: Session, viewer: User, now: datetime, days: int = 30
) -> tuple[list[RepRow], RepRow, int]:
    """Rows for the reps ``viewer`` may see (a manager's team, everyone for admins), a total row, the
    hot threshold used."""
    hot = config.get(session)["hot_threshold"]
    since = now - timedelta(days=days)
    users = select(User.id, User.name).where(User.active.is_(True))
    if viewer.role != Role.ADMIN:
        users = users.where(User.id.in_(team_member_ids(session, viewer)))
    people = dict(session.execute(users).all())
    if not people:
        return [], RepRow(0, "", 0, 0, 0, 0), hot
    ids = list(people)
    efforts = {
        uid: (n, h)
        for uid, n, h in session.execute(
            select(
                FollowUp.user_id,
                func.count(),
                func.coalesce(func.sum(case((FollowUp.score_at >= hot, 1), else_=0)), 0),
            )
            .where(
                FollowUp.at >= since,
                FollowUp.at <= now,
                FollowUp.is_fake.is_(False),
                FollowUp.user_id.in_(ids),
            )
            .group_by(FollowUp.user_id)
        )
    }
    books = {
        uid: (n, h)
        for uid, n, h in session.execute(
            select(
                Customer.owner_id,
                func.count(),
                func.coalesce(func.sum(case((Customer.score >= hot, 1), else_=0)), 0),
            )
            .where(Customer.owner_id.in_(ids), Customer.merged_into_id.is_(None))
            .group_by(Customer.owner_id)
        )
    }
    rows = []
    for uid, name in people.items():
        n, h = efforts.get(uid, (0, 0))
        held, hot_held = books.get(uid, (0, 0))
        if n or held:
            rows.append(RepRow(uid, name, int(n), int(h), int(held), int(hot_held)))
    rows.sort(key=lambda r: (-(r.focus or 0), r.name))
    total = RepRow(
        0,
        "",
        sum(r.followups for r in rows),
        sum(r.hot_followups for r in rows),
        sum(r.held for r in rows),
        sum(r.hot_held for r in rows),
    )
    return rows, total, hot
