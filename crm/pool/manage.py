"""Pool administration (公海池设置): create, edit and delete pools, their members (users or whole teams)
and pool admins. Every change is audited with ``crm.settings.store.audit`` (section ``pools``).

Admins create and delete pools and choose pool admins; a pool admin edits the rest of their own pools.
"""

from __future__ import annotations

import re
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from crm.models import (
    AssignStrategy,
    Customer,
    Pool,
    PoolAdmin,
    PoolMember,
    PrevOwnerRule,
    RecycleRule,
    Team,
    User,
)
from crm.permissions import can_edit_pool
from crm.pool.services import PoolRefusal
from crm.settings import store

AUDIT_SECTION = "pools"
POOL_KINDS = {
    "lead": "新线索池",
    "intent": "意向池",
    "silent": "沉默池",
    "region": "区域池",
    "industry": "行业池",
    "product": "产品线池",
    "general": "通用",
}
STRATEGY_LABELS = {
    AssignStrategy.NONE: "不自动分配",
    AssignStrategy.ROUND_ROBIN: "轮流分配",
    AssignStrategy.LOAD_BALANCE: "负载均衡(持有最少者优先)",
    AssignStrategy.MATCH: "区域/行业匹配",
}
PREV_OWNER_LABELS = {
    PrevOwnerRule.NONE: "不限制",
    PrevOwnerRule.COOLDOWN: "冷却期:原负责人 N 天内不能重新领取",
    PrevOwnerRule.PRIORITY: "优先期:N 天内只有原负责人可以领取",
}
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

# Fields copied as they are (validated by the form / below).
_SCALARS = (
    "name", "description", "kind", "enabled", "daily_claim_limit", "prev_owner_rule", "prev_owner_days",
    "mask_contacts", "auto_assign_strategy", "fair_release", "release_times", "nurture_max_days", "region",
    "industry", "embargo_hours", "nurture_allowed",
)  # fmt: skip


def member_user_ids(pool: Pool) -> list[int]:
    return sorted(m.user_id for m in pool.members if m.user_id)


def member_team_ids(pool: Pool) -> list[int]:
    return sorted(m.team_id for m in pool.members if m.team_id)


def admin_user_ids(pool: Pool) -> list[int]:
    return sorted(a.user_id for a in pool.admins)


def snapshot(pool: Pool) -> dict:
    """The pool's settings as plain data (audit before/after and the API)."""
    data = {name: getattr(pool, name) for name in _SCALARS}
    data["release_times"] = list(pool.release_times or [])
    data["member_user_ids"] = member_user_ids(pool)
    data["member_team_ids"] = member_team_ids(pool)
    data["admin_user_ids"] = admin_user_ids(pool)
    return data


def parse_times(text: str | list | None) -> list[str]:
    """``"10:00, 15:30"`` or ``["10:00"]`` → ``["10:00", "15:30"]`` (sorted, zero-padded); ValueError if bad."""
    if text is None:
        return []
    parts = text if isinstance(text, list) else re.split(r"[,,、\s]+", str(text))
    times = set()
    for part in parts:
        part = str(part).strip()
        if not part:
            continue
        match = _TIME.match(part)
        if not match:
            raise ValueError(part)
        times.add(f"{int(match.group(1)):02d}:{match.group(2)}")
    return sorted(times)


def _check(session: Session, pool: Pool | None, data: dict) -> dict[str, str]:
    errors: dict[str, str] = {}
    name = (data.get("name") or "").strip()
    if not name:
        errors["name"] = _("请填写公海名称。")
    else:
        clash = session.scalar(
            select(Pool.id).where(func.lower(Pool.name) == name.lower(), Pool.id != (pool.id if pool else -1))
        )
        if clash:
            errors["name"] = _("已有同名公海「%(name)s」。", name=name)
    if data.get("prev_owner_rule") != PrevOwnerRule.NONE and not data.get("prev_owner_days"):
        errors["prev_owner_days"] = _("请填写原负责人规则的天数。")
    if data.get("fair_release") and not data.get("release_times"):
        errors["release_times"] = _("开启定时释放时至少填写一个释放时间,如 10:00。")
    for key, model in (("member_user_ids", User), ("admin_user_ids", User), ("member_team_ids", Team)):
        wanted = set(data.get(key) or [])
        if wanted:
            found = set(session.scalars(select(model.id).where(model.id.in_(wanted))))
            if wanted - found:
                errors[key] = _("包含不存在的用户或团队。")
    return errors


def save_pool(session: Session, pool: Pool | None, data: dict, actor: User, now: datetime) -> Pool:
    """Create (``pool`` None, admins only) or update a pool from cleaned form data; audited. Flushes.

    ``data`` keys: the pool columns plus ``member_user_ids``, ``member_team_ids``, ``admin_user_ids``.
    A pool admin who is not an admin cannot change the pool admins (their value is kept).
    Raises ``PoolRefusal('invalid', …, errors={field: message})`` or ``PoolRefusal('forbidden')``.
    """
    if pool is None and not actor.is_admin:
        raise PoolRefusal("forbidden", _("只有管理员可以新建公海。"))
    if pool is not None and not can_edit_pool(session, actor, pool):
        raise PoolRefusal("forbidden", _("只有管理员或该公海的管理员可以修改它。"))
    data = dict(data)
    if pool is not None and not actor.is_admin:
        data["admin_user_ids"] = admin_user_ids(pool)
    data["name"] = (data.get("name") or "").strip()
    data["description"] = (data.get("description") or "").strip()
    data["region"] = (data.get("region") or "").strip() or None
    data["industry"] = (data.get("industry") or "").strip() or None
    if data.get("prev_owner_rule") == PrevOwnerRule.NONE:
        data["prev_owner_days"] = data.get("prev_owner_days") or 0
    errors = _check(session, pool, data)
    if errors:
        raise PoolRefusal("invalid", next(iter(errors.values())), errors=errors)
    before = snapshot(pool) if pool is not None else None
    if pool is None:
        pool = Pool(created_at=now, release_times=[])
        session.add(pool)
    for name in _SCALARS:
        if name in data:
            setattr(pool, name, data[name])
    session.flush()
    _sync_members(session, pool, data)
    session.flush()
    session.refresh(pool)
    after = snapshot(pool)
    changed = [k for k in after if before is None or before.get(k) != after[k]]
    summary = (
        _("新建公海「%(name)s」", name=pool.name)
        if before is None
        else _("修改公海「%(name)s」: %(fields)s", name=pool.name, fields=", ".join(changed) or "—")
    )
    store.audit(session, AUDIT_SECTION, actor, now, before, after, summary, object_id=pool.id)
    return pool


def _sync_members(session: Session, pool: Pool, data: dict) -> None:
    if "member_user_ids" in data:
        wanted = set(data["member_user_ids"] or [])
        for m in [m for m in pool.members if m.user_id and m.user_id not in wanted]:
            pool.members.remove(m)
        have = set(member_user_ids(pool))
        pool.members.extend(PoolMember(user_id=uid) for uid in sorted(wanted - have))
    if "member_team_ids" in data:
        wanted = set(data["member_team_ids"] or [])
        for m in [m for m in pool.members if m.team_id and m.team_id not in wanted]:
            pool.members.remove(m)
        have = set(member_team_ids(pool))
        pool.members.extend(PoolMember(team_id=tid) for tid in sorted(wanted - have))
    if "admin_user_ids" in data:
        wanted = set(data["admin_user_ids"] or [])
        for a in [a for a in pool.admins if a.user_id not in wanted]:
            pool.admins.remove(a)
        have = set(admin_user_ids(pool))
        pool.admins.extend(PoolAdmin(user_id=uid) for uid in sorted(wanted - have))


def delete_pool(session: Session, pool: Pool, actor: User, now: datetime) -> None:
    """Delete an empty pool (admins). Refused while customers call it home or a recycle rule sends to it."""
    if not actor.is_admin:
        raise PoolRefusal("forbidden", _("只有管理员可以删除公海。"))
    held = session.scalar(select(func.count()).select_from(Customer).where(Customer.pool_id == pool.id))
    if held:
        raise PoolRefusal(
            "invalid", _("「%(name)s」还有 %(n)s 个客户,请先移到其他公海或停用它。", name=pool.name, n=held)
        )
    if session.scalar(
        select(exists().where(RecycleRule.target_pool_id == pool.id, RecycleRule.pool_id != pool.id))
    ):
        raise PoolRefusal(
            "invalid", _("有其他公海的回收规则把客户回收到「%(name)s」,请先修改这些规则。", name=pool.name)
        )
    before = snapshot(pool)
    # Names are unique: free the name for a new pool, keep the row for the ledger's history.
    pool.name = f"{pool.name[:40]}#已删除{pool.id}"
    pool.enabled = False
    pool.deleted_at = now
    store.audit(
        session,
        AUDIT_SECTION,
        actor,
        now,
        before,
        None,
        _("删除公海「%(name)s」", name=before["name"]),
        pool.id,
    )
