"""Object-level permissions: who may see or act on a pool or a customer. One place for each rule."""

from __future__ import annotations

from sqlalchemy import exists, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm.models import Customer, Pool, PoolAdmin, PoolMember, Role, User


def team_member_ids(session: Session, manager: User) -> set[int]:
    """Users a manager looks after: their team's members and users who name them as manager."""
    from crm.models import Team

    team_ids = select(Team.id).where(Team.manager_id == manager.id)
    ids = session.scalars(
        select(User.id).where(or_(User.team_id.in_(team_ids), User.manager_id == manager.id))
    ).all()
    if manager.team_id is not None:
        ids += session.scalars(select(User.id).where(User.team_id == manager.team_id)).all()
    return set(ids) | {manager.id}


def manages(session: Session, manager: User, user: User | int | None) -> bool:
    """Admins manage everyone; a manager manages their team; nobody else manages anyone."""
    if user is None:
        return False
    user_id = user if isinstance(user, int) else user.id
    if manager.role == Role.ADMIN:
        return True
    if manager.role != Role.MANAGER:
        return False
    return user_id in team_member_ids(session, manager)


def is_pool_admin(session: Session, user: User, pool: Pool | int) -> bool:
    pool_id = pool if isinstance(pool, int) else pool.id
    if user.role == Role.ADMIN:
        return True
    return bool(
        session.scalar(select(exists().where(PoolAdmin.pool_id == pool_id, PoolAdmin.user_id == user.id)))
    )


def is_pool_member(session: Session, user: User, pool: Pool | int) -> bool:
    """Members may see and claim: listed themselves, through their team, or as a pool admin."""
    pool_id = pool if isinstance(pool, int) else pool.id
    member = exists().where(
        PoolMember.pool_id == pool_id,
        or_(PoolMember.user_id == user.id, PoolMember.team_id == user.team_id if user.team_id else false()),
    )
    return bool(session.scalar(select(member))) or is_pool_admin(session, user, pool_id)


def visible_pool_ids(session: Session, user: User) -> list[int]:
    """Pools a user may open: all for admins and managers; member or admin pools for reps."""
    query = select(Pool.id).where(Pool.deleted_at.is_(None))
    if user.role in (Role.ADMIN, Role.MANAGER):
        return list(session.scalars(query.order_by(Pool.id)))
    member = select(PoolMember.pool_id).where(
        or_(PoolMember.user_id == user.id, PoolMember.team_id == user.team_id if user.team_id else false())
    )
    admin = select(PoolAdmin.pool_id).where(PoolAdmin.user_id == user.id)
    return list(session.scalars(query.where(or_(Pool.id.in_(member), Pool.id.in_(admin))).order_by(Pool.id)))


def can_view_customer(session: Session, user: User, customer: Customer) -> bool:
    """Owner, the owner's manager, admins; for an unowned customer, members and admins of its pool."""
    if user.role == Role.ADMIN or customer.owner_id == user.id:
        return True
    if customer.owner_id is not None:
        return manages(session, user, customer.owner_id)
    if user.role == Role.MANAGER:
        return True
    return customer.pool_id is not None and is_pool_member(session, user, customer.pool_id)


def can_edit_customer(session: Session, user: User, customer: Customer) -> bool:
    """Owner, the owner's manager, admins; unowned customers: pool admins."""
    if user.role == Role.ADMIN or customer.owner_id == user.id:
        return True
    if customer.owner_id is not None:
        return manages(session, user, customer.owner_id)
    return customer.pool_id is not None and is_pool_admin(session, user, customer.pool_id)


def mask_phone(phone: str | None) -> str | None:
    """138****5678 for pools that mask contacts until claimed."""
    if not phone:
        return phone
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) < 7:
        return "****"
    return f"{digits[:3]}****{digits[-4:]}"


def mask_text(value: str | None) -> str | None:
    if not value:
        return value
    return value[0] + "***"


# ---------------------------------------------------------------- pool actions (公海操作)


def can_release(session: Session, user: User, customer: Customer) -> bool:
    """The owner, the owner's manager and admins may put an owned customer back into its pool."""
    if customer.owner_id is None:
        return False
    return customer.owner_id == user.id or manages(session, user, customer.owner_id)


def can_assign_from_pool(session: Session, user: User, pool: Pool | int) -> bool:
    """Who may hand pool customers to someone (分配): admins, the pool's admins, and managers of a pool their
    team belongs to (they, a team they lead, or one of the people they manage is a member). A manager does
    not reach into another region's pool."""
    if user.role == Role.MANAGER:
        return is_pool_member(session, user, pool) or manages_a_member(session, user, pool)
    return is_pool_admin(session, user, pool)


def manages_a_member(session: Session, manager: User, pool: Pool | int) -> bool:
    """Is a team this manager leads, or someone they manage, a member of the pool?"""
    from crm.models import Team

    pool_id = pool if isinstance(pool, int) else pool.id
    team_ids = select(Team.id).where(Team.manager_id == manager.id)
    listed = exists().where(
        PoolMember.pool_id == pool_id,
        or_(
            PoolMember.user_id.in_(team_member_ids(session, manager)),
            PoolMember.team_id.in_(team_ids),
            PoolMember.team_id == manager.team_id if manager.team_id else false(),
        ),
    )
    return bool(session.scalar(select(listed)))


def can_transfer(session: Session, user: User, customer: Customer) -> bool:
    """Owned customers move between users (转移) by the owner's manager or an admin."""
    return customer.owner_id is not None and manages(session, user, customer.owner_id)


def can_receive_from(session: Session, actor: User, receiver: User, pool_id: int | None) -> bool:
    """May ``actor`` give a customer to ``receiver``?

    Admins: anyone. Managers: the people they manage (their team). A pool admin: the members of that
    pool. A rep never assigns to themselves (they claim, so the daily limit applies).
    """
    if actor.role == Role.ADMIN:
        return True
    if actor.role == Role.REP and receiver.id == actor.id:
        return False
    if manages(session, actor, receiver):
        return True
    return (
        pool_id is not None
        and is_pool_admin(session, actor, pool_id)
        and is_pool_member(session, receiver, pool_id)
    )


def can_edit_pool(session: Session, user: User, pool: Pool | int) -> bool:
    """Admins edit every pool; a pool admin edits their own pools' settings and members."""
    return is_pool_admin(session, user, pool)


def managed_user_ids(session: Session, user: User) -> set[int] | None:
    """Whose customers ``user`` sees in the customer list: None means everyone (admins)."""
    if user.role == Role.ADMIN:
        return None
    if user.role == Role.MANAGER:
        return team_member_ids(session, user)
    return {user.id}


def pool_role_exprs(user_id, team_id, pool_id) -> tuple[ColumnElement, ColumnElement]:
    """SQL for (is pool admin, is listed as member) of a user in the pool ``pool_id``; each argument a value,
    a column or a bind parameter, so a caller can select them with other columns in one round trip (or
    build the statement once). Admins are both everywhere: see ``roles_from``."""
    admin = exists().where(PoolAdmin.pool_id == pool_id, PoolAdmin.user_id == user_id)
    member = exists().where(
        PoolMember.pool_id == pool_id,
        or_(PoolMember.user_id == user_id, PoolMember.team_id == team_id if team_id is not None else false()),
    )
    return admin, member


def roles_from(user: User, is_admin, is_member) -> tuple[bool, bool]:
    """(is pool admin, is member) from the selected ``pool_role_exprs`` (admins are both everywhere)."""
    if user.role == Role.ADMIN:
        return True, True
    return bool(is_admin), bool(is_admin or is_member)


def pool_roles(session: Session, user: User, pool: Pool | int) -> tuple[bool, bool]:
    """(is pool admin, is member) of one pool in a single query — the board asks on every request."""
    pool_id = pool if isinstance(pool, int) else pool.id
    if user.role == Role.ADMIN:
        return True, True
    return roles_from(user, *session.execute(select(*pool_role_exprs(user.id, user.team_id, pool_id))).one())


def can_work_pipeline(session: Session, user: User, customer: Customer) -> bool:
    """Move stages, convert leads, edit opportunities (crm/pipeline): the owner, the owner's manager and
    admins. Stricter than ``can_edit_customer``: pool admins do not push deals of unowned customers."""
    if user.role == Role.ADMIN:
        return True
    if customer.owner_id is None:
        return False
    return customer.owner_id == user.id or manages(session, user, customer.owner_id)
