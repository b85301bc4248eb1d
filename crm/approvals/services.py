"""What waits on a manager: pending 延期申请 of their team, their pending 抽查, and 查重冲突 between
customers of their team (admins: everyone's)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.intake.merge import conflict_scope
from crm.models import DuplicateConflict, SpotCheck, User
from crm.recycle.services import pending_requests


@dataclass(frozen=True)
class Pending:
    extensions: int
    spot_checks: int
    conflicts: int

    @property
    def total(self) -> int:
        return self.extensions + self.spot_checks + self.conflicts


def pending_counts(session: Session, user: User) -> Pending:
    """The three counts behind the 审批 badge (three small queries; zero for reps)."""
    if not user.is_manager:
        return Pending(0, 0, 0)
    spot = select(func.count()).select_from(SpotCheck).where(SpotCheck.verdict == "pending")
    if not user.is_admin:
        spot = spot.where(SpotCheck.manager_id == user.id)
    conflicts = select(func.count()).select_from(DuplicateConflict).where(DuplicateConflict.status == "open")
    scope = conflict_scope(session, user)
    if scope is not None:
        conflicts = conflicts.where(scope)
    return Pending(
        extensions=len(pending_requests(session, user)),
        spot_checks=session.scalar(spot) or 0,
        conflicts=session.scalar(conflicts) or 0,
    )
