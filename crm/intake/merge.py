"""The conflict queue (撞单仲裁): merge two customers, or mark a pair distinct (never asked again).

Merge is one transaction. Everything that points at the loser moves to the winner — contacts, follow-ups,
activities, opportunities, stage changes, reminders, behaviour events and any table a feature adds with a
foreign key to ``customers.id`` (found from the schema) — except the ledger: ``pool_events`` rows are
append-only, so they stay on the loser and the timeline reads the winner's and its merged customers'
rows. Tags are united. The loser's contact details are kept on the winner: blank fields of the winner are
filled, and any phone / email / WeChat the winner does not have yet becomes a contact, so the keys still
find the winner. Both get a ``merged`` ledger row; the loser keeps ``merged_into_id`` (its pages and API
id redirect to the winner) and loses its name grams (no longer a fuzzy candidate). If only the loser had an
owner, the winner passes to that owner (the holding continues); if both had owners, the winner's owner
keeps it and the loser's owner is told.
"""

from __future__ import annotations

import logging
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from crm.extensions import db
from crm.intake import grams
from crm.intake.services import _lock, route_after_conflict
from crm.models import (
    Contact,
    Customer,
    DuplicateConflict,
    EventKind,
    ReminderKind,
    Role,
    User,
    customer_tags,
)
from crm.notify import notify
from crm.permissions import team_member_ids
from crm.pool.services import record_event
from crm.scoring import services as scoring

log = logging.getLogger(__name__)

# Tables whose customer references are not moved by the generic pass (handled here, or append-only).
NOT_MOVED = {"pool_events", "name_grams", "duplicate_conflicts", "customers", "customer_tags"}
FILLABLE = ("contact_name", "job_title", "job_level", "address", "region", "industry", "company_size",
            "channel", "campaign")  # fmt: skip


class MergeError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def conflict_scope(session: Session, user: User):
    """Which conflicts ``user`` may see and resolve, as a SQL condition (``None``: all, for admins).

    A manager settles 撞单 between customers of their own team: both records owned by members of the team.
    A pair involving a pool lead or another team's customer stays with the admins."""
    if user.role == Role.ADMIN:
        return None
    members = team_member_ids(session, user) if user.role == Role.MANAGER else set()
    new, old = aliased(Customer), aliased(Customer)
    return and_(
        select(new.id).where(new.id == DuplicateConflict.customer_id, new.owner_id.in_(members)).exists(),
        select(old.id).where(old.id == DuplicateConflict.candidate_id, old.owner_id.in_(members)).exists(),
    )


def may_resolve(session: Session, user: User, customer_ids: tuple[int, int]) -> bool:
    """True when ``user`` may merge these two customers or mark them distinct (see ``conflict_scope``)."""
    if user.role == Role.ADMIN:
        return True
    if user.role != Role.MANAGER:
        return False
    members = team_member_ids(session, user)
    owners = session.scalars(select(Customer.owner_id).where(Customer.id.in_(customer_ids))).all()
    return len(owners) == len(set(customer_ids)) and all(o is not None and o in members for o in owners)


def _live(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id, populate_existing=True)
    if customer is None:
        raise MergeError("not_found", _("客户不存在。"))
    if customer.merged_into_id is not None:
        raise MergeError("merged", _("客户「%(name)s」已被合并。", name=customer.name))
    return customer


def _references() -> list:
    """Every (table, column) with a foreign key to customers.id, other than those handled apart."""
    out = []
    for table in db.metadata.sorted_tables:
        if table.name in NOT_MOVED:
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == "customers" and fk.column.name == "id":
                out.append((table, fk.parent))
    return out


def merge(
    session: Session,
    winner_id: int,
    loser_id: int,
    actor: User,
    now: datetime,
    *,
    conflict_id: int | None = None,
) -> Customer:
    """Merge ``loser_id`` into ``winner_id`` (see the module docstring). Commits; returns the winner."""
    if not may_resolve(session, actor, (winner_id, loser_id)):
        raise MergeError("forbidden", _("只有管理员或双方所属团队的主管可以合并客户。"))
    if winner_id == loser_id:
        raise MergeError("invalid", _("不能把客户合并到自己。"))
    session.commit()
    try:
        _lock(session)
        winner, loser = _live(session, winner_id), _live(session, loser_id)
        loser_owner = loser.owner_id
        _move_children(session, winner.id, loser.id)
        _unite_tags(session, winner.id, loser.id)
        _keep_details(session, winner, loser, now)
        took_over = _settle_ownership(session, winner, loser, actor, now)
        session.execute(
            update(Customer)
            .where(Customer.id == loser.id)
            .values(merged_into_id=winner.id, owner_id=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        # Customers merged into the loser earlier now point at the winner (no chains to follow).
        session.execute(
            update(Customer)
            .where(Customer.merged_into_id == loser.id)
            .values(merged_into_id=winner.id)
            .execution_options(synchronize_session=False)
        )
        grams.drop_grams(session, [loser.id])
        record_event(
            session, winner.id, EventKind.MERGED, now, actor=actor, pool_id=winner.pool_id,
            to_user_id=winner.owner_id if took_over else None, holding_no=winner.holding_no,
            reason=_("合并了客户 #%(id)s %(name)s", id=loser.id, name=loser.name),
            data={"loser_id": loser.id, "took_over_owner": took_over},
        )  # fmt: skip
        record_event(
            session, loser.id, EventKind.MERGED, now, actor=actor, pool_id=loser.pool_id,
            from_user_id=loser_owner, holding_no=loser.holding_no,
            holding_followups=loser.holding_followups if loser_owner else None,
            reason=_("已合并到客户 #%(id)s %(name)s", id=winner.id, name=winner.name),
            result=_("合并"), data={"winner_id": winner.id},
        )  # fmt: skip
        _settle_conflicts(session, winner.id, loser.id, actor, now, conflict_id)
        if loser_owner is not None and loser_owner != winner.owner_id:
            notify(
                session, user_id=loser_owner, kind=ReminderKind.SYSTEM,
                title=_("你的客户「%(loser)s」已合并到「%(winner)s」", loser=loser.name, winner=winner.name),
                body=_("合并后的客户由其原负责人继续跟进,跟进记录和商机都已转过去。"),
                unique_key=f"merged:{loser.id}", due_at=now, now=now, customer_id=winner.id,
            )  # fmt: skip
        session.flush()
        scoring.recompute(session, [winner.id], now)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return session.get(Customer, winner_id, populate_existing=True)


def _move_children(session: Session, winner_id: int, loser_id: int) -> None:
    for table, column in _references():
        savepoint = session.begin_nested()
        try:
            session.execute(update(table).where(column == loser_id).values({column.name: winner_id}))
            savepoint.commit()
        except IntegrityError:
            # A one-per-customer row the winner already has: the loser's stays with the loser.
            savepoint.rollback()
            log.warning("merge %s→%s: kept %s rows on the loser (unique clash)", loser_id, winner_id, table)


def _unite_tags(session: Session, winner_id: int, loser_id: int) -> None:
    t = customer_tags
    mine = select(t.c.tag_id).where(t.c.customer_id == winner_id)
    missing = select(t.c.tag_id).where(t.c.customer_id == loser_id, t.c.tag_id.not_in(mine))
    tag_ids = list(session.scalars(missing))
    if tag_ids:
        session.execute(t.insert(), [{"customer_id": winner_id, "tag_id": tid} for tid in tag_ids])
    session.execute(delete(t).where(t.c.customer_id == loser_id))


def _keep_details(session: Session, winner: Customer, loser: Customer, now: datetime) -> None:
    """Fill the winner's blanks from the loser; keep the loser's other contact keys as a contact."""
    for name in FILLABLE:
        if getattr(winner, name) in (None, "") and getattr(loser, name) not in (None, ""):
            setattr(winner, name, getattr(loser, name))
    if loser.notes and loser.notes not in (winner.notes or ""):
        winner.notes = (
            (winner.notes or "") + "\n" + _("[合并自 #%(id)s] ", id=loser.id) + loser.notes
        ).strip()
    winner.utm = (loser.utm or {}) | (winner.utm or {})
    for later in ("last_followup_at", "won_at", "last_stage_change_at"):
        values = [v for v in (getattr(winner, later), getattr(loser, later)) if v is not None]
        if values:
            setattr(winner, later, max(values))
    spare = {}
    for raw, key in (("phone", "phone_key"), ("email", "email_key"), ("wechat", "wechat_key")):
        value, value_key = getattr(loser, raw), getattr(loser, key)
        if not value_key:
            continue
        if not getattr(winner, key):
            setattr(winner, raw, value)
            setattr(winner, key, value_key)
            continue
        if value_key == getattr(winner, key):
            continue
        on_contact = session.scalar(
            select(func.count())
            .select_from(Contact)
            .where(Contact.customer_id == winner.id, getattr(Contact, key) == value_key)
        )
        if not on_contact:
            spare[raw], spare[key] = value, value_key
    if spare:
        session.add(
            Contact(
                customer_id=winner.id,
                name=(loser.contact_name or loser.name)[:60],
                job_title=loser.job_title,
                job_level=loser.job_level,
                is_primary=False,
                created_at=now,
                **spare,
            )  # fmt: skip
        )
    winner.updated_at = now
    session.flush()


def _settle_ownership(
    session: Session, winner: Customer, loser: Customer, actor: User, now: datetime
) -> bool:
    """An unowned winner takes over the loser's owner and holding clocks. Returns True when it did."""
    if winner.owner_id is not None or loser.owner_id is None:
        return False
    changed = session.execute(
        update(Customer)
        .where(Customer.id == winner.id, Customer.owner_id.is_(None))
        .values(
            owner_id=loser.owner_id,
            holding_no=Customer.holding_no + 1,
            claimed_at=loser.claimed_at or now,
            first_contact_at=loser.first_contact_at,
            holding_followups=loser.holding_followups,
            extension_days=loser.extension_days,
            visible_from=None,
            updated_at=now,
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise MergeError("conflict", _("客户负责人刚刚变更,请刷新后重试。"))
    session.refresh(winner)
    return True


def _settle_conflicts(
    session: Session, winner_id: int, loser_id: int, actor: User, now: datetime, conflict_id: int | None
) -> None:
    c = DuplicateConflict
    pair = or_(
        and_(c.customer_id == winner_id, c.candidate_id == loser_id),
        and_(c.customer_id == loser_id, c.candidate_id == winner_id),
    )
    session.execute(
        update(c)
        .where(or_(pair, c.id == conflict_id) if conflict_id else pair, c.status == "open")
        .values(status="merged", resolved_by_id=actor.id, resolved_at=now)
    )
    # The loser's other open pairs now concern the winner (or close when the winner has that pair).
    for conflict in session.scalars(
        select(c).where(or_(c.customer_id == loser_id, c.candidate_id == loser_id), c.status == "open")
    ):
        other = conflict.candidate_id if conflict.customer_id == loser_id else conflict.customer_id
        already = session.scalar(
            select(func.count())
            .select_from(c)
            .where(
                or_(
                    and_(c.customer_id == winner_id, c.candidate_id == other),
                    and_(c.customer_id == other, c.candidate_id == winner_id),
                )
            )
        )
        if other == winner_id or already:
            conflict.status, conflict.resolved_by_id, conflict.resolved_at = "merged", actor.id, now
        elif conflict.customer_id == loser_id:
            conflict.customer_id = winner_id
        else:
            conflict.candidate_id = winner_id
    session.flush()


def list_conflicts(
    session: Session, state: str = "open", limit: int = 50, before_id: int | None = None, scope=None
):
    """The conflict queue: open conflicts newest first, or resolved ones most recently decided first (the
    web page and ``GET /api/v1/conflicts``); ``before_id`` pages open conflicts by id; ``scope`` is
    ``conflict_scope``'s condition for the viewer (``None``: all)."""
    query = select(DuplicateConflict) if scope is None else select(DuplicateConflict).where(scope)
    if state == "open":
        query = query.where(DuplicateConflict.status == "open").order_by(
            DuplicateConflict.created_at.desc(), DuplicateConflict.id.desc()
        )
    else:
        query = query.where(DuplicateConflict.status != "open").order_by(
            DuplicateConflict.resolved_at.desc(), DuplicateConflict.id.desc()
        )
    if before_id is not None:
        query = query.where(DuplicateConflict.id < before_id)
    return list(session.scalars(query.limit(limit)))


def mark_distinct(session: Session, conflict_id: int, actor: User, now: datetime) -> DuplicateConflict:
    """Not a duplicate: the pair is never asked again; a held-back lead is routed now. Commits."""
    pair = session.get(DuplicateConflict, conflict_id)
    if (
        pair is not None
        and pair.status == "open"
        and not may_resolve(session, actor, (pair.customer_id, pair.candidate_id))
    ):
        raise MergeError("forbidden", _("只有管理员或双方所属团队的主管可以处理查重冲突。"))
    changed = session.execute(
        update(DuplicateConflict)
        .where(DuplicateConflict.id == conflict_id, DuplicateConflict.status == "open")
        .values(status="distinct", resolved_by_id=actor.id, resolved_at=now)
    ).rowcount
    conflict = session.get(DuplicateConflict, conflict_id, populate_existing=True)
    if conflict is None:
        session.rollback()
        raise MergeError("not_found", _("查重记录不存在。"))
    if changed != 1:
        session.rollback()
        raise MergeError("resolved", _("该记录已被处理,请刷新。"))
    session.commit()
    route_after_conflict(session, conflict.customer_id, now)
    session.commit()
    return conflict
