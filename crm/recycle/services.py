"""Recycle rules editing (with preview and a confirmation step), 长期培育, protection and 延期申请.

Plain functions taking ``session``, the acting user and ``now``; they flush but do not commit (routes, the
API and jobs commit). Refusals raise ``RecycleError`` with a Chinese message, a stable code and a status.

Decisions where the issue is silent:
- Saving a rule list that would recycle more customers *right now* than the current rules needs a
  confirmation carrying that exact count (``confirm``); a stale count is asked again.
- Removed rules are soft-deleted (``deleted_at``): ledger rows keep naming them.
- 长期培育 needs an enabled nurture-expiry rule in the home pool (otherwise nothing would ever recycle it) and
  is capped by ``Pool.nurture_max_days``; the owner or their manager sets it.
- Protection is set by managers (of the owner) and admins. Extension days total at most
  ``max_extension_days`` per holding; one pending request per holding; the requester's manager (or an admin)
  decides; a request whose holding ended is closed as rejected ("持有已结束").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm import clock
from crm.models import (
    Customer,
    EventKind,
    ExtensionRequest,
    Pool,
    RecycleRule,
    ReminderKind,
    Role,
    RuleKind,
    SettingsAudit,
    Stage,
    StageKind,
    User,
)
from crm.notify import notify
from crm.permissions import is_pool_admin, manages, team_member_ids
from crm.pool.services import record_event
from crm.recycle.engine import Preview, RuleDef, active_rules, preview
from crm.settings import store


class RecycleError(Exception):
    """A refused recycle action: ``code`` for programs, ``message`` for people, HTTP ``status``."""

    def __init__(self, code: str, message: str, status: int = 422, **extra):
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra


class ConfirmRequired(RecycleError):
    """Saving would recycle ``count`` customers at once: ask again with ``confirm=count``."""

    def __init__(self, count: int, preview: Preview):
        super().__init__(
            "confirm_required",
            _("保存后将立即回收 %(n)s 个客户。请确认数量后再保存。", n=count),
            409,
            count=count,
        )
        self.count, self.preview = count, preview


# ---------------------------------------------------------------- pools and rules


def live_pool(session: Session, pool_id: int) -> Pool:
    pool = session.get(Pool, pool_id)
    if pool is None or pool.deleted_at is not None:
        raise RecycleError("not_found", _("公海不存在。"), 404)
    return pool


def check_rules_admin(session: Session, user: User, pool: Pool) -> None:
    """Admins and the pool's admins edit its rules."""
    if not is_pool_admin(session, user, pool):
        raise RecycleError("forbidden", _("只有管理员或该公海的管理员可以修改回收规则。"), 403)


def editable_pools(session: Session, user: User) -> list[Pool]:
    pools = session.scalars(select(Pool).where(Pool.deleted_at.is_(None)).order_by(Pool.id))
    return [p for p in pools if is_pool_admin(session, user, p)]


def pool_rules(session: Session, pool_id: int) -> list[RecycleRule]:
    """The pool's rule list (enabled or not), in order; removed rules are left out."""
    return list(
        session.scalars(
            select(RecycleRule)
            .where(RecycleRule.pool_id == pool_id, RecycleRule.deleted_at.is_(None))
            .order_by(RecycleRule.position, RecycleRule.id)
        )
    )


def rule_defs(session: Session, pool_id: int) -> list[RuleDef]:
    return [RuleDef.from_model(r) for r in pool_rules(session, pool_id)]


def check_rule_refs(session: Session, pool: Pool, rules: list[RuleDef]) -> None:
    """What the form cannot check alone: target pools exist and are live, stages exist, ids belong here."""
    errors: dict[str, dict[str, str]] = {}
    own_ids = {r.id for r in pool_rules(session, pool.id)}
    for index, rule in enumerate(rules):
        if rule.target_pool_id is not None:
            target = session.get(Pool, rule.target_pool_id)
            if target is None or target.deleted_at is not None:
                errors.setdefault(str(index), {})["target_pool_id"] = _(
                    "第 %(n)s 条规则的目标公海不存在或已删除。", n=index + 1
                )
        if rule.exclude_stage_id is not None:
            stage = session.get(Stage, rule.exclude_stage_id)
            if stage is None or stage.kind != StageKind.OPEN:
                errors.setdefault(str(index), {})["exclude_stage_id"] = _(
                    "第 %(n)s 条规则的排除阶段无效。", n=index + 1
                )
        if rule.id is not None and rule.id not in own_ids:
            errors.setdefault(str(index), {})["id"] = _("第 %(n)s 条规则不属于该公海。", n=index + 1)
    if errors:
        first = next(iter(next(iter(errors.values())).values()))
        raise RecycleError("invalid", first, 422, fields=errors)


def _summary(rules: list[RuleDef]) -> str:
    return "、".join(r.label + ("" if r.enabled else _("(停用)")) for r in rules) or _("无规则")


def save_rules(
    session: Session, pool: Pool, rules: list[RuleDef], user: User, now: datetime, confirm: int | None = None
) -> list[RecycleRule]:
    """Replace the pool's rule list (audited). Refuses with ``ConfirmRequired`` when the change itself
    would recycle customers right away and ``confirm`` does not carry that count."""
    check_rules_admin(session, user, pool)
    check_rule_refs(session, pool, rules)
    rules = [RuleDef(**{**r.__dict__, "pool_id": pool.id, "position": i}) for i, r in enumerate(rules)]
    before = rule_defs(session, pool.id)
    new_preview = preview(session, pool.id, rules, now)
    if new_preview.due_now:
        current = preview(session, pool.id, active_rules(session, pool.id), now)
        if new_preview.due_now > current.due_now and confirm != new_preview.due_now:
            raise ConfirmRequired(new_preview.due_now, new_preview)
    existing = {r.id: r for r in pool_rules(session, pool.id)}
    kept = set()
    saved = []
    for rule in rules:
        row = existing.get(rule.id) if rule.id is not None else None
        if row is None:
            row = RecycleRule(pool_id=pool.id, created_at=now)
            session.add(row)
        data = rule.as_dict()
        data.pop("id")
        for key, value in data.items():
            setattr(row, key, list(value) if isinstance(value, tuple) else value)
        row.updated_at = now
        kept.add(row.id)
        saved.append(row)
    for rule_id, row in existing.items():
        if rule_id not in kept:
            row.deleted_at = now
            row.enabled = False
            row.updated_at = now
    session.flush()
    store.audit(
        session, "recycle_rules", user, now, [r.as_dict() for r in before],
        [RuleDef.from_model(r).as_dict() for r in saved],
        _("修改了「%(pool)s」的回收规则: %(before)s → %(after)s", pool=pool.name, before=_summary(before),
          after=_summary(rules))[:300],
        object_id=pool.id,
    )  # fmt: skip
    return saved


def rules_audit(session: Session, pool_id: int, limit: int = 20) -> list[SettingsAudit]:
    return list(
        session.scalars(
            select(SettingsAudit)
            .where(SettingsAudit.section == "recycle_rules", SettingsAudit.object_id == pool_id)
            .order_by(SettingsAudit.id.desc())
            .limit(limit)
        )
    )


# ---------------------------------------------------------------- customers


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id, populate_existing=True)
    if customer is None or customer.merged_into_id is not None:
        raise RecycleError("not_found", _("客户不存在。"), 404)
    return customer


def _owned(customer: Customer) -> int:
    if customer.owner_id is None:
        raise RecycleError("not_owned", _("该客户在公海中,没有负责人。"), 409)
    return customer.owner_id


def ensure_nurture_expiry(session: Session, pool, now: datetime) -> None:
    """Nurture's expiry is built into a pool that allows it: the pool keeps an enabled 长期培育到期 rule
    (added at the end of its list when missing, e.g. removed from the rule list), so the sweep recycles a
    nurtured customer on its date unless it was followed up since. Teams may still edit that rule's warnings."""
    if any(r.kind == RuleKind.NURTURE_EXPIRY for r in active_rules(session, pool.id)):
        return
    last = max((r.position or 0 for r in pool_rules(session, pool.id)), default=-1)
    session.add(
        RecycleRule(pool_id=pool.id, kind=RuleKind.NURTURE_EXPIRY, day_kind="calendar", grades=[], kinds=[],
                    warn_days=0, escalate_days=0, exclude_protected=True, enabled=True, position=last + 1,
                    created_at=now, updated_at=now)
    )  # fmt: skip
    session.flush()


def set_nurture(
    session: Session, customer_id: int, user: User, until: datetime | None, now: datetime
) -> Customer:
    """长期培育 until ``until`` (None clears it): other rules pause; on that date the customer is recycled
    unless followed up since. Owner or their manager; capped by the pool's ``nurture_max_days``."""
    customer = _customer(session, customer_id)
    owner_id = _owned(customer)
    if owner_id != user.id and not manages(session, user, owner_id):
        raise RecycleError("forbidden", _("只有负责人或其主管可以设置长期培育。"), 403)
    pool = live_pool(session, customer.pool_id)
    if until is not None:
        until = clock.as_utc(until)
        if until <= now:
            raise RecycleError("invalid", _("培育截止时间必须晚于现在。"), fields={"until": "past"})
        latest = now + timedelta(days=pool.nurture_max_days)
        if until > latest:
            raise RecycleError(
                "invalid",
                _("「%(pool)s」最长培育 %(n)s 天,最晚 %(when)s。", pool=pool.name, n=pool.nurture_max_days,
                  when=clock.local(latest).strftime("%Y-%m-%d")),
                fields={"until": "too_late"},
            )  # fmt: skip
        if not pool.nurture_allowed:
            raise RecycleError("invalid", _("「%(pool)s」不允许长期培育。", pool=pool.name))
        ensure_nurture_expiry(session, pool, now)
    changed = session.execute(
        update(Customer)
        .where(Customer.id == customer.id, Customer.owner_id == owner_id)
        .values(nurture_until=until, nurture_set_at=now if until else None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise RecycleError("conflict", _("该客户的负责人已变更,请刷新。"), 409)
    record_event(
        session, customer.id, EventKind.NURTURED, now, actor=user, pool_id=customer.pool_id,
        holding_no=customer.holding_no, data={"until": until.isoformat() if until else None},
        result=(_("长期培育至 %(when)s", when=clock.local(until).strftime("%Y-%m-%d %H:%M")) if until
                else _("取消长期培育")),
    )  # fmt: skip
    session.flush()
    session.refresh(customer)
    return customer


def set_protection(
    session: Session, customer_id: int, user: User, until: datetime | None, now: datetime
) -> Customer:
    """保护 until ``until`` (None clears it): never recycled by rules that exclude protected customers.
    The owner's manager or an admin."""
    customer = _customer(session, customer_id)
    allowed = user.role == Role.ADMIN or (
        user.role == Role.MANAGER
        and (
            manages(session, user, customer.owner_id)
            if customer.owner_id
            else is_pool_admin(session, user, customer.pool_id)
        )
    )
    if not allowed:
        raise RecycleError("forbidden", _("只有负责人的主管或管理员可以设置保护。"), 403)
    if until is not None:
        until = clock.as_utc(until)
        if until <= now:
            raise RecycleError("invalid", _("保护截止时间必须晚于现在。"), fields={"until": "past"})
        if until > now + timedelta(days=3660):
            raise RecycleError("invalid", _("保护期不能超过 10 年。"), fields={"until": "too_late"})
    customer.protected_until = until
    customer.updated_at = now
    record_event(
        session, customer.id, EventKind.PROTECTED, now, actor=user, pool_id=customer.pool_id,
        holding_no=customer.holding_no, data={"until": until.isoformat() if until else None},
        result=(_("保护至 %(when)s", when=clock.local(until).strftime("%Y-%m-%d %H:%M")) if until
                else _("取消保护")),
    )  # fmt: skip
    session.flush()
    return customer


def _manager_of(user: User) -> User | None:
    from crm.auth.services import manager_of

    return manager_of(user)


def request_extension(
    session: Session, customer_id: int, user: User, days: int, reason: str, now: datetime
) -> ExtensionRequest:
    """延期申请: the owner asks for +``days`` on the current holding, with a reason. Ledgered; the manager is
    notified."""
    customer = _customer(session, customer_id)
    if customer.owner_id != user.id:
        raise RecycleError("forbidden", _("只有负责人可以为自己的客户申请延期。"), 403)
    reason = (reason or "").strip()
    if not reason:
        raise RecycleError("invalid", _("请填写延期理由。"), fields={"reason": "required"})
    if len(reason) > 500:
        raise RecycleError("invalid", _("延期理由不超过 500 字。"), fields={"reason": "too_long"})
    limit = store.get(session, "recycle")["max_extension_days"]
    left = limit - (customer.extension_days or 0)
    if not isinstance(days, int) or days < 1 or days > left:
        message = (
            _(
                "本次持有已延期 %(used)s 天,最多还可申请 %(left)s 天。",
                used=customer.extension_days,
                left=max(left, 0),
            )
            if left < limit
            else _("延期天数需在 1–%(n)s 天之间。", n=limit)
        )
        raise RecycleError("invalid", message, fields={"days": "range"})
    pending = session.scalar(
        select(ExtensionRequest.id).where(
            ExtensionRequest.customer_id == customer.id,
            ExtensionRequest.holding_no == customer.holding_no,
            ExtensionRequest.status == "pending",
        )
    )
    if pending is not None:
        raise RecycleError("pending", _("已有一条待审批的延期申请,请等待主管处理。"), 409)
    request = ExtensionRequest(
        customer_id=customer.id, requester_id=user.id, holding_no=customer.holding_no, days=days,
        reason=reason, status="pending", created_at=now,
    )  # fmt: skip
    session.add(request)
    session.flush()
    record_event(
        session, customer.id, EventKind.EXTENSION_REQUESTED, now, actor=user, pool_id=customer.pool_id,
        holding_no=customer.holding_no, reason=reason[:200], data={"days": days, "request_id": request.id},
        result=_("申请延期 %(n)s 天", n=days), dedupe_key=f"extension-request:{request.id}",
    )  # fmt: skip
    manager = _manager_of(user)
    if manager is not None:
        notify(
            session, user_id=manager.id, kind=ReminderKind.EXTENSION, customer_id=customer.id,
            title=_("%(name)s 申请「%(customer)s」延期 %(n)s 天", name=user.name, customer=customer.name, n=days),
            body=reason, unique_key=f"extension-request:{request.id}", due_at=now, now=now,
        )  # fmt: skip
    return request


def can_decide(session: Session, user: User, request: ExtensionRequest) -> bool:
    if user.role == Role.ADMIN:
        return True
    return (
        user.role == Role.MANAGER
        and user.id != request.requester_id
        and manages(session, user, request.requester_id)
    )


def decide_extension(
    session: Session, request_id: int, user: User, approve: bool, now: datetime, note: str | None = None
) -> ExtensionRequest:
    """Approve (moves the due time: ``extension_days`` += days) or reject a pending request. Ledgered;
    the requester is notified. A request whose holding has ended is closed as rejected."""
    request = session.get(ExtensionRequest, request_id, populate_existing=True)
    if request is None:
        raise RecycleError("not_found", _("延期申请不存在。"), 404)
    if not can_decide(session, user, request):
        raise RecycleError("forbidden", _("只有申请人的主管或管理员可以审批。"), 403)
    if request.status != "pending":
        raise RecycleError("decided", _("该申请已处理。"), 409)
    note = (note or "").strip()[:500] or None
    if not approve and note is None:
        raise RecycleError("invalid", _("请填写驳回理由,申请人会看到。"), fields={"note": "required"})
    customer = _customer(session, request.customer_id)
    current = customer.holding_no == request.holding_no and customer.owner_id == request.requester_id
    if approve and current:
        limit = store.get(session, "recycle")["max_extension_days"]
        if (customer.extension_days or 0) + request.days > limit:
            raise RecycleError(
                "invalid", _("批准后延期将超过每次持有 %(n)s 天的上限。", n=limit), fields={"days": "range"}
            )
    status = "approved" if approve and current else "rejected"
    if not current:
        note = _("持有已结束,申请失效")
    decided = session.execute(
        update(ExtensionRequest)
        .where(ExtensionRequest.id == request.id, ExtensionRequest.status == "pending")
        .values(status=status, decided_by_id=user.id, decided_at=now, decision_note=note)
        .execution_options(synchronize_session=False)
    ).rowcount
    if decided != 1:
        raise RecycleError("decided", _("该申请已处理。"), 409)
    if status == "approved":
        moved = session.execute(
            update(Customer)
            .where(
                Customer.id == customer.id,
                Customer.holding_no == request.holding_no,
                Customer.owner_id == request.requester_id,
            )
            .values(extension_days=Customer.extension_days + request.days, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved != 1:
            raise RecycleError("conflict", _("该客户的负责人已变更,请刷新。"), 409)
    kind = EventKind.EXTENDED if status == "approved" else EventKind.EXTENSION_REJECTED
    record_event(
        session, customer.id, kind, now, actor=user, pool_id=customer.pool_id, holding_no=request.holding_no,
        to_user_id=request.requester_id, reason=(note or "")[:200] or None,
        data={"days": request.days, "request_id": request.id},
        result=_("批准延期 %(n)s 天", n=request.days) if status == "approved" else _("驳回延期申请"),
        dedupe_key=f"extension:{request.id}",
    )  # fmt: skip
    notify(
        session, user_id=request.requester_id, kind=ReminderKind.EXTENSION, customer_id=customer.id,
        title=(_("「%(customer)s」延期 %(n)s 天已批准", customer=customer.name, n=request.days)
               if status == "approved" else _("「%(customer)s」的延期申请被驳回", customer=customer.name)),
        body=note, unique_key=f"extension-decision:{request.id}", due_at=now, now=now,
    )  # fmt: skip
    session.flush()
    session.refresh(request)
    return request


def pending_requests(session: Session, user: User, limit: int = 50) -> list[ExtensionRequest]:
    """Pending requests this user may decide (admins: all; managers: their team's), current holdings only."""
    query = (
        select(ExtensionRequest)
        .join(Customer, Customer.id == ExtensionRequest.customer_id)
        .where(
            ExtensionRequest.status == "pending",
            Customer.holding_no == ExtensionRequest.holding_no,
            Customer.owner_id == ExtensionRequest.requester_id,
        )
        .order_by(ExtensionRequest.created_at)
        .limit(limit)
    )
    if user.role != Role.ADMIN:
        if user.role != Role.MANAGER:
            return []
        members = team_member_ids(session, user) - {user.id}
        query = query.where(ExtensionRequest.requester_id.in_(members))
    return list(session.scalars(query))


def customer_requests(session: Session, customer: Customer) -> list[ExtensionRequest]:
    return list(
        session.scalars(
            select(ExtensionRequest)
            .where(
                ExtensionRequest.customer_id == customer.id,
                ExtensionRequest.holding_no == customer.holding_no,
            )
            .order_by(ExtensionRequest.id.desc())
        )
    )


def extension_suggested(session: Session, customer: Customer, user: User, now: datetime) -> bool:
    """Whether the customer page offers 申请延期 in its action bar: the user owns the customer, a recycle is
    near (its warning time has come, or it is due within two days) and no request is pending."""
    from crm.recycle.engine import due_info

    if customer.owner_id != user.id:
        return False
    info = due_info(session, customer, now)
    if info.due is None:
        return False
    near = info.state != "ok" or (info.due.warn_at is not None and info.due.warn_at <= now)
    near = near or info.due.due_at - now <= timedelta(days=2)
    if not near:
        return False
    return not any(r.status == "pending" and r.holding_no == customer.holding_no
                   for r in customer_requests(session, customer))  # fmt: skip


FIRST_CONTACT_DEFAULT_HOURS = 48
FIRST_CONTACT_WINDOW = timedelta(days=7)


def awaiting_first_contact(session: Session, user: User, now: datetime, limit: int = 10) -> list[dict]:
    """新领取待首联: the user's customers claimed in the last week and not contacted yet in this holding, each
    with its deadline (the pool's 首次联系 rule, else 48 h after the claim), soonest first. Two queries."""
    from crm.models import RecycleRule, RuleKind

    hours = dict(
        session.execute(
            select(RecycleRule.pool_id, func.min(RecycleRule.hours))
            .where(RecycleRule.kind == RuleKind.NO_FIRST_CONTACT, RecycleRule.enabled.is_(True))
            .group_by(RecycleRule.pool_id)
        ).all()
    )
    rows = session.execute(
        select(
            Customer.id, Customer.name, Customer.grade, Customer.phone, Customer.claimed_at, Customer.pool_id
        )
        .where(
            Customer.owner_id == user.id,
            Customer.first_contact_at.is_(None),
            Customer.claimed_at.is_not(None),
            Customer.claimed_at >= now - FIRST_CONTACT_WINDOW,
        )
        .order_by(Customer.claimed_at)
        .limit(200)
    ).all()
    items = []
    for cid, name, grade, phone, claimed_at, pool_id in rows:
        deadline = claimed_at + timedelta(hours=hours.get(pool_id) or FIRST_CONTACT_DEFAULT_HOURS)
        items.append({"id": cid, "name": name, "grade": grade, "phone": phone, "deadline": deadline,
                      "hours_left": (deadline - now).total_seconds() / 3600})  # fmt: skip
    items.sort(key=lambda i: i["deadline"])
    return items[:limit]
