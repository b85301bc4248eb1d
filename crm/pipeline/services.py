"""Stages as actions (阶段即动作, SPEC §7): the one place that moves a customer or an opportunity (商机)
between stages, converts a lead (一转三) and creates/edits opportunities. Web, API, demo and tests call these.

What entering a stage needs (``Stage.requirement``), checked here so no caller can skip it:
- ``quote`` (已报价): items (name, qty > 0, price ≥ 0), amount > 0 (defaults to the items' total, may be
  lower for a discount), valid-until date not in the past → a ``Quote`` row;
- ``followup`` (初步沟通/有意向/谈判中): a follow-up with a next-contact time, recorded through
  ``crm.followups.services.record_followup`` so it is a real touch (recycle clocks, reminders, scoring);
- ``contract`` (成交): contract number (unique), amount > 0, signed date (not in the future), invoice
  title and tax id (统一社会信用代码 / 税号: 15–20 letters or digits) → a ``Contract`` row; the opportunity
  is won, the customer becomes an account (lifecycle ``customer``) and ``Customer.won_at`` is set, which is
  what the recycle engine reads as "won a deal within the protection window" (``protect_days``);
- ``lost_reason`` (输单): a reason from the configured list (settings section ``pipeline``).

Every move writes a ``StageChange`` (a timeline event; dashboards read it), sets the customer's
``stage_id`` and ``last_stage_change_at`` (the recycle rule "no stage progress" and the 高意向未推进 inbox
count from it) and the opportunity's stage, ``status`` (open/won/lost) and ``closed_at``. A refusal raises
``StageError`` with a Chinese message naming what is missing and changes nothing (the work runs in a
savepoint). Services flush, never commit: the caller's transaction owns the change.

Decisions where the SPEC is silent:
- Who: the customer's owner, the owner's manager, admins (``permissions.can_work_pipeline``).
- A customer-level move (``POST /customers/<id>/stage``) moves the customer's one open opportunity; with
  several it asks which one; with none it moves the customer itself (a lead 新线索 → 初步沟通) — except into
  a quote or contract stage, which always belong to an opportunity, so one named after the customer is
  opened on the spot.
- A won opportunity is final (its contract exists); a lost one may be reopened into an open stage.
- A new opportunity starts at the customer's current stage when that is an active open stage, else at the
  first active open stage; its creation is a ``StageChange`` from no stage.
- ``from_pool``: the customer was taken from a pool (claimed or assigned, i.e. it has a holding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from flask_babel import gettext as _
from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from crm import clock, signals
from crm.dbutil import prebuilt
from crm.followups import services as followups
from crm.inputguard import parse_id
from crm.models import (
    Activity,
    Contact,
    Contract,
    Customer,
    Lifecycle,
    Opportunity,
    Quote,
    Stage,
    StageChange,
    StageKind,
    StageRequirement,
    User,
)
from crm.permissions import can_work_pipeline
from crm.settings import store

OPEN, WON, LOST = "open", "won", "lost"
FUNNEL_BUCKETS = ("lead", "communication", "intent", "deal", "lost")
MAX_ITEMS = 50
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
TAX_ID_RE = re.compile(r"^[0-9A-Z]{15,20}$")
DEFAULT_LOST_REASONS = [
    "价格太高",
    "选择了竞品",
    "预算取消",
    "需求不匹配",
    "联系不上决策人",
    "项目延期",
    "其他",
]


def _validate_settings(data: dict) -> dict:
    reasons = [str(r).strip() for r in data.get("lost_reasons") or [] if str(r).strip()]
    if not reasons:
        raise store.SettingsError({"lost_reasons": _("至少保留一个输单原因。")})
    if any(len(r) > 60 for r in reasons):
        raise store.SettingsError({"lost_reasons": _("每个输单原因不超过 60 字。")})
    if len(reasons) > 30:
        raise store.SettingsError({"lost_reasons": _("输单原因最多 30 个。")})
    return {"lost_reasons": list(dict.fromkeys(reasons))}


store.register("pipeline", "销售阶段", {"lost_reasons": DEFAULT_LOST_REASONS}, _validate_settings)


class StageError(Exception):
    """A refused pipeline action. ``code`` → HTTP status for the API; ``field`` names the input at fault."""

    STATUS = {"requirement": 422, "invalid": 422, "forbidden": 403, "not_found": 404, "conflict": 409}

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 422)


def lost_reasons(session: Session) -> list[str]:
    return store.get(session, "pipeline")["lost_reasons"]


def active_stages(session: Session) -> list[Stage]:
    return list(session.scalars(select(Stage).where(Stage.active.is_(True)).order_by(Stage.position)))


def first_open_stage(session: Session) -> Stage:
    stage = session.scalar(
        select(Stage)
        .where(Stage.active.is_(True), Stage.kind == StageKind.OPEN)
        .order_by(Stage.position)
        .limit(1)
    )
    if stage is None:
        raise StageError("invalid", _("没有启用的进行中阶段,请管理员先在阶段设置里启用一个。"))
    return stage


def find_stage(session: Session, value: int | str | None) -> Stage:
    """A stage by id or by name (the API accepts both); refused when unknown or deactivated."""
    stage = None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        stage_id = parse_id(value)
        stage = session.get(Stage, stage_id) if stage_id else None
    elif isinstance(value, str) and value.strip():
        stage = session.scalar(select(Stage).where(Stage.name == value.strip()))
    if stage is None:
        raise StageError("invalid", _("请选择目标阶段。") if not value else _("没有这个阶段。"), "stage")
    if not stage.active:
        raise StageError("invalid", _("阶段「%(name)s」已停用。", name=stage.name), "stage")
    return stage


# ---------------------------------------------------------------- parsing of requirement payloads


def _text(payload: dict, key: str) -> str:
    value = payload.get(key)
    return str(value).strip() if value is not None else ""


def parse_amount(value, field: str, label: str, *, positive: bool = True) -> Decimal:
    """A money amount: a number (or numeric text) with at most 2 decimals, > 0 (or ≥ 0)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise StageError("requirement", _("请填写%(label)s。", label=label), field)
    if isinstance(value, bool):
        raise StageError("requirement", _("%(label)s必须是数字。", label=label), field)
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise StageError("requirement", _("%(label)s必须是数字。", label=label), field) from None
    if not amount.is_finite():
        raise StageError("requirement", _("%(label)s必须是数字。", label=label), field)
    if positive and amount <= 0:
        raise StageError("requirement", _("%(label)s必须大于 0。", label=label), field)
    if amount < 0:
        raise StageError("requirement", _("%(label)s不能为负数。", label=label), field)
    if amount > MAX_AMOUNT:
        raise StageError("requirement", _("%(label)s太大了。", label=label), field)
    if amount != amount.quantize(Decimal("0.01")):
        raise StageError("requirement", _("%(label)s最多两位小数。", label=label), field)
    return amount.quantize(Decimal("0.01"))


def parse_date(value, field: str, label: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value or "").strip()
    if not text:
        raise StageError("requirement", _("请填写%(label)s。", label=label), field)
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise StageError(
            "requirement", _("%(label)s格式不正确(如 2026-03-14)。", label=label), field
        ) from None


def clean_quote(payload: dict, now: datetime) -> dict:
    """已报价: items, amount and valid-until, validated; returns the cleaned values."""
    raw_items = payload.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise StageError("requirement", _("进入已报价需要报价单:请至少填写一项报价明细。"), "items")
    if len(raw_items) > MAX_ITEMS:
        raise StageError("requirement", _("报价明细最多 %(n)s 项。", n=MAX_ITEMS), "items")
    items, total = [], Decimal("0")
    for n, item in enumerate(raw_items, start=1):
        if not isinstance(item, dict):
            raise StageError("requirement", _("第 %(n)s 项报价明细格式不正确。", n=n), "items")
        name = _text(item, "name")
        if not name:
            raise StageError("requirement", _("第 %(n)s 项报价明细缺少产品名称。", n=n), "items")
        if len(name) > 120:
            raise StageError("requirement", _("第 %(n)s 项产品名称不超过 120 字。", n=n), "items")
        qty = parse_amount(item.get("qty"), "items", _("第 %(n)s 项数量", n=n))
        price = parse_amount(item.get("price"), "items", _("第 %(n)s 项单价", n=n), positive=False)
        items.append({"name": name, "qty": float(qty), "price": float(price)})
        total += qty * price
    given = payload.get("amount")
    if given is None or (isinstance(given, str) and not given.strip()):
        if total <= 0:
            raise StageError("requirement", _("报价金额必须大于 0。"), "amount")
        amount = parse_amount(total.quantize(Decimal("0.01")), "amount", _("报价金额"))
    else:
        amount = parse_amount(given, "amount", _("报价金额"))
    valid_until = parse_date(payload.get("valid_until"), "valid_until", _("报价有效期"))
    if valid_until < clock.local_today(None, now):
        raise StageError("requirement", _("报价有效期不能早于今天。"), "valid_until")
    return {"items": items, "amount": amount, "valid_until": valid_until}


def normalise_tax_id(value) -> str:
    return re.sub(r"[\s-]", "", str(value or "")).upper()


def clean_contract(session: Session, payload: dict, now: datetime) -> dict:
    """成交: contract number (unique), amount, signed date, invoice title and tax id."""
    number = _text(payload, "contract_number")
    if not number:
        raise StageError("requirement", _("进入成交需要合同:请填写合同编号。"), "contract_number")
    if len(number) > 60:
        raise StageError("requirement", _("合同编号不超过 60 字。"), "contract_number")
    amount = parse_amount(payload.get("amount"), "amount", _("合同金额"))
    signed_on = parse_date(payload.get("signed_on"), "signed_on", _("签约日期"))
    if signed_on > clock.local_today(None, now):
        raise StageError("requirement", _("签约日期不能晚于今天。"), "signed_on")
    title = _text(payload, "invoice_title")
    if not title:
        raise StageError("requirement", _("请填写开票抬头。"), "invoice_title")
    if len(title) > 120:
        raise StageError("requirement", _("开票抬头不超过 120 字。"), "invoice_title")
    tax_id = normalise_tax_id(payload.get("tax_id"))
    if not tax_id:
        raise StageError("requirement", _("请填写税号(统一社会信用代码)。"), "tax_id")
    if not TAX_ID_RE.match(tax_id):
        raise StageError(
            "requirement", _("税号格式不正确:应为 15–20 位字母或数字(统一社会信用代码为 18 位)。"), "tax_id"
        )
    if session.scalar(select(exists().where(Contract.number == number))):
        raise StageError(
            "conflict", _("合同编号 %(number)s 已存在,请核对。", number=number), "contract_number"
        )
    note = _text(payload, "note")[:2000] or None
    return {"number": number, "amount": amount, "signed_on": signed_on, "invoice_title": title,
            "tax_id": tax_id, "note": note}  # fmt: skip


def clean_lost_reason(session: Session, payload: dict) -> str:
    reason = _text(payload, "lost_reason")
    if not reason:
        raise StageError("requirement", _("进入输单需要选择输单原因。"), "lost_reason")
    if reason not in lost_reasons(session):
        raise StageError(
            "requirement", _("输单原因「%(reason)s」不在可选列表中。", reason=reason), "lost_reason"
        )
    return reason


def _followup_time(value) -> datetime | None:
    if isinstance(value, datetime):
        return clock.as_utc(value) if value.tzinfo else clock.from_local(value)
    text = str(value or "").strip()
    if not text:
        return None
    try:
        if "+" in text[10:] or text.endswith("Z") or text[10:].count("-"):
            return clock.parse_iso(text.replace("Z", "+00:00"))
        return clock.from_local(datetime.fromisoformat(text))
    except ValueError:
        raise StageError(
            "requirement", _("下次联系时间格式不正确,请选择日期和时间。"), "next_contact_at"
        ) from None


def _goal_met(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "y", "yes", "on")
    return bool(value)


# ---------------------------------------------------------------- stage changes


def _check_access(session: Session, user: User, customer: Customer) -> None:
    if customer.merged_into_id is not None:
        raise StageError("not_found", _("客户不存在。"))
    if not can_work_pipeline(session, user, customer):
        raise StageError("forbidden", _("只有客户负责人、其主管或管理员可以推进阶段。"))


def _target(
    session: Session, target: Opportunity | Customer, payload: dict
) -> tuple[Customer, Opportunity | None]:
    """(customer, opportunity to move or None for a customer-level move)."""
    if isinstance(target, Opportunity):
        return target.customer, target
    customer = target
    wanted = payload.get("opportunity_id")
    if wanted not in (None, ""):
        try:
            opp = session.get(Opportunity, int(wanted))
        except (TypeError, ValueError):
            opp = None
        if opp is None or opp.customer_id != customer.id:
            raise StageError("not_found", _("该客户没有这个商机。"), "opportunity_id")
        return customer, opp
    open_opps = list(
        session.scalars(
            select(Opportunity)
            .where(Opportunity.customer_id == customer.id, Opportunity.status == OPEN)
            .limit(2)
        )
    )
    if len(open_opps) > 1:
        raise StageError("invalid", _("该客户有多个进行中的商机,请指明要推进哪一个。"), "opportunity_id")
    return customer, (open_opps[0] if open_opps else None)


def change_stage(
    session: Session,
    target: Opportunity | Customer,
    stage: Stage | int | str,
    user: User,
    now: datetime,
    payload: dict | None = None,
) -> StageChange:
    """Move ``target`` (an opportunity, or a customer — see the module docstring) into ``stage``,
    enforcing what the stage requires from ``payload``. Raises ``StageError`` and changes nothing when
    refused. Does not commit."""
    payload = dict(payload or {})
    stage = stage if isinstance(stage, Stage) else find_stage(session, stage)
    if not stage.active:
        raise StageError("invalid", _("阶段「%(name)s」已停用。", name=stage.name), "stage")
    customer, opp = _target(session, target, payload)
    _check_access(session, user, customer)
    current = opp.stage if opp is not None else customer.stage
    if current is not None and current.id == stage.id:
        raise StageError("invalid", _("已经处于「%(name)s」阶段。", name=stage.name), "stage")
    if opp is not None and opp.status == WON:
        raise StageError("invalid", _("商机已成交,不能再改阶段。"), "stage")
    if opp is None and stage.requirement in (StageRequirement.QUOTE, StageRequirement.CONTRACT):
        opp_needed = True
    else:
        opp_needed = False

    # Validate everything first, so a refusal writes nothing.
    req = stage.requirement
    quote = contract = reason = None
    followup_time = None
    if req == StageRequirement.QUOTE:
        quote = clean_quote(payload, now)
    elif req == StageRequirement.CONTRACT:
        contract = clean_contract(session, payload, now)
    elif req == StageRequirement.LOST_REASON:
        reason = clean_lost_reason(session, payload)
    elif req == StageRequirement.FOLLOWUP:
        followup_time = _followup_time(payload.get("next_contact_at"))
        if not _text(payload, "content") and followup_time is None:
            raise StageError(
                "requirement",
                _(
                    "进入「%(name)s」需要一条跟进记录:请填写沟通内容、下次计划和下次联系时间。",
                    name=stage.name,
                ),
                "content",
            )
        try:
            followups.validate(payload.get("channel") or "phone", payload.get("content"),
                               payload.get("next_plan"), followup_time, now)  # fmt: skip
        except followups.FollowUpError as exc:
            raise StageError("requirement", str(exc), exc.field) from None

    savepoint = session.begin_nested()
    try:
        change = _apply(session, customer, opp, opp_needed, stage, user, now, payload,
                        quote, contract, reason, followup_time)  # fmt: skip
        savepoint.commit()
    except followups.FollowUpError as exc:
        savepoint.rollback()
        code = "forbidden" if isinstance(exc, followups.FollowUpForbidden) else "requirement"
        raise StageError(code, str(exc), exc.field) from None
    except Exception:
        savepoint.rollback()
        raise
    signals.stage_changed.send(change, session=session, customer=customer, change=change, now=now)
    if stage.kind == StageKind.WON:
        signals.deal_won.send(
            customer, session=session, customer=customer, opportunity=change.opportunity, now=now
        )
    return change


def _apply(
    session, customer, opp, opp_needed, stage, user, now, payload, quote, contract, reason, followup_time
):
    if opp is None and opp_needed:
        opp = _new_opportunity(session, customer, user, now, name=customer.name, stage=customer.stage)
    from_stage_id = opp.stage_id if opp is not None else customer.stage_id
    notes = []
    if stage.requirement == StageRequirement.FOLLOWUP:
        followups.record_followup(
            session, customer, user, channel=payload.get("channel") or "phone", content=payload.get("content"),
            goal_met=_goal_met(payload.get("goal_met")), next_plan=payload.get("next_plan"),
            next_contact_at=followup_time, now=now, confirm_over_cap=payload.get("confirm_over_cap"),
        )  # fmt: skip
        notes.append(_("跟进:%(text)s", text=str(payload.get("content")).strip()[:80]))
    if quote is not None:
        session.add(Quote(opportunity_id=opp.id, items=quote["items"], amount=quote["amount"],
                          valid_until=quote["valid_until"], created_by_id=user.id, created_at=now))  # fmt: skip
        opp.amount = quote["amount"]
        notes.append(_("报价 ¥%(amount)s,有效期至 %(until)s", amount=f"{quote['amount']:,}",
                       until=quote["valid_until"].isoformat()))  # fmt: skip
    if contract is not None:
        session.add(Contract(opportunity_id=opp.id, created_by_id=user.id, created_at=now, **contract))
        opp.amount = contract["amount"]
        notes.append(_("合同 %(number)s ¥%(amount)s,签约 %(day)s", number=contract["number"],
                       amount=f"{contract['amount']:,}", day=contract["signed_on"].isoformat()))  # fmt: skip
    if reason is not None:
        notes.append(_("输单原因:%(reason)s", reason=reason))
    if opp is not None:
        opp.stage = stage
        opp.stage_changed_at = now
        if stage.kind == StageKind.WON:
            opp.status, opp.closed_at, opp.lost_reason = WON, now, None
        elif stage.kind == StageKind.LOST:
            opp.status, opp.closed_at, opp.lost_reason = LOST, now, reason
        else:
            opp.status, opp.closed_at, opp.lost_reason = OPEN, None, None
        notes.insert(0, _("商机「%(name)s」", name=opp.name))
    customer.stage = stage
    customer.last_stage_change_at = now
    customer.updated_at = now
    if stage.kind == StageKind.WON:
        customer.won_at = now  # starts the protection window (crm.recycle.engine reads won_at)
        customer.lifecycle = Lifecycle.CUSTOMER
    change = StageChange(customer_id=customer.id, opportunity_id=opp.id if opp else None,
                         from_stage_id=from_stage_id, to_stage_id=stage.id, user_id=user.id, at=now,
                         note=" · ".join(notes) or None)  # fmt: skip
    session.add(change)
    session.flush()
    return change


# ---------------------------------------------------------------- opportunities


@dataclass
class OpportunityInput:
    name: str
    amount: Decimal | None = None
    expected_close: date | None = None


def _clean_opportunity(data: OpportunityInput) -> OpportunityInput:
    name = (data.name or "").strip()
    if not name:
        raise StageError("invalid", _("请填写商机名称。"), "name")
    if len(name) > 120:
        raise StageError("invalid", _("商机名称不超过 120 字。"), "name")
    amount = None
    if data.amount not in (None, ""):
        amount = parse_amount(data.amount, "amount", _("预计金额"), positive=False)
    return OpportunityInput(name, amount, data.expected_close)


def _new_opportunity(session, customer, user, now, *, name, stage=None, amount=None, expected_close=None):
    if stage is None or not stage.active or stage.kind != StageKind.OPEN:
        stage = first_open_stage(session)
    opp = Opportunity(
        customer_id=customer.id, owner_id=customer.owner_id or user.id, name=name[:120], stage_id=stage.id,
        amount=amount, expected_close=expected_close, status=OPEN,
        from_pool=customer.pool_id is not None and customer.claimed_at is not None,
        stage_changed_at=now, created_at=now,
    )  # fmt: skip
    session.add(opp)
    session.flush()
    session.add(StageChange(customer_id=customer.id, opportunity_id=opp.id, from_stage_id=None, to_stage_id=stage.id,
                            user_id=user.id, at=now, note=_("新建商机「%(name)s」", name=opp.name)))  # fmt: skip
    if customer.stage_id is None:
        customer.stage = stage
        customer.last_stage_change_at = now
    session.flush()
    return opp


def create_opportunity(
    session: Session, customer: Customer, user: User, now: datetime, data: OpportunityInput
) -> Opportunity:
    """A new opportunity of ``customer`` (see the module docstring for its first stage). Does not commit."""
    _check_access(session, user, customer)
    data = _clean_opportunity(data)
    return _new_opportunity(session, customer, user, now, name=data.name, stage=customer.stage,
                            amount=data.amount, expected_close=data.expected_close)  # fmt: skip


def update_opportunity(
    session: Session, opp: Opportunity, user: User, now: datetime, data: OpportunityInput
) -> Opportunity:
    """Rename an opportunity, change its expected amount or close date (its stage moves only through
    ``change_stage``)."""
    _check_access(session, user, opp.customer)
    data = _clean_opportunity(data)
    opp.name, opp.amount, opp.expected_close = data.name, data.amount, data.expected_close
    session.flush()
    return opp


# ---------------------------------------------------------------- 一转三


@dataclass
class ConversionInput:
    opportunity_name: str = ""
    amount: Decimal | str | None = None
    expected_close: date | None = None
    contact_name: str | None = None


def can_convert(customer: Customer) -> bool:
    return customer.lifecycle == Lifecycle.LEAD and customer.merged_into_id is None


@dataclass
class Conversion:
    customer: Customer
    contact: Contact
    opportunity: Opportunity


def convert_lead(
    session: Session, customer: Customer, user: User, now: datetime, data: ConversionInput
) -> Conversion:
    """一转三: a qualified lead becomes the customer account, its primary contact and an opportunity, in
    one transaction (a savepoint: if any step fails, nothing of it stays). History is kept: the timeline
    gets an activity and the opportunity's first stage change.

    Qualified means: a lead (not yet converted), owned (claimed or assigned — pool leads are claimed
    first), with a contact person's name (typed now or already on the lead)."""
    _check_access(session, user, customer)
    if customer.lifecycle != Lifecycle.LEAD:
        raise StageError("invalid", _("该客户已经转化过了。"))
    if customer.owner_id is None:
        raise StageError("invalid", _("公海中的线索请先领取,再转化。"))
    contact_name = (data.contact_name or customer.contact_name or "").strip()
    if not contact_name:
        raise StageError("invalid", _("转化需要联系人姓名。"), "contact_name")
    if len(contact_name) > 60:
        raise StageError("invalid", _("联系人姓名不超过 60 字。"), "contact_name")
    opp_data = _clean_opportunity(
        OpportunityInput(data.opportunity_name or customer.name, data.amount, data.expected_close)
    )
    savepoint = session.begin_nested()
    try:
        customer.lifecycle = Lifecycle.CUSTOMER
        customer.contact_name = contact_name
        customer.updated_at = now
        contact = session.scalar(
            select(Contact).where(Contact.customer_id == customer.id, Contact.is_primary.is_(True)).limit(1)
        )
        if contact is None:
            contact = Contact(
                customer_id=customer.id, name=contact_name, job_title=customer.job_title,
                job_level=customer.job_level, phone=customer.phone, phone_key=customer.phone_key,
                email=customer.email, email_key=customer.email_key, wechat=customer.wechat,
                wechat_key=customer.wechat_key, is_primary=True, created_at=now,
            )  # fmt: skip
            session.add(contact)
        session.flush()
        opp = _new_opportunity(session, customer, user, now, name=opp_data.name, stage=customer.stage,
                               amount=opp_data.amount, expected_close=opp_data.expected_close)  # fmt: skip
        session.add(
            Activity(
                customer_id=customer.id, kind="converted", at=now, user_id=user.id,
                title=_("线索转化为客户(一转三)"),
                body=_("客户:%(customer)s;联系人:%(contact)s;商机:%(opp)s",
                       customer=customer.name, contact=contact.name, opp=opp.name),
                data={"contact_id": contact.id, "opportunity_id": opp.id},
            )
        )  # fmt: skip
        session.flush()
        savepoint.commit()
    except Exception:
        savepoint.rollback()
        raise
    return Conversion(customer, contact, opp)


# ---------------------------------------------------------------- reads


def customer_opportunities(session: Session, customer_id: int) -> list[Opportunity]:
    return list(
        session.scalars(
            select(Opportunity)
            .where(Opportunity.customer_id == customer_id)
            .order_by(
                (Opportunity.status == OPEN).desc(),
                Opportunity.stage_changed_at.desc(),
                Opportunity.id.desc(),
            )
        )
    )


def board(session: Session, owner_id: int, limit_per_stage: int = 200) -> dict[int, list[Opportunity]]:
    """The kanban: a rep's open opportunities grouped by stage id (most recently moved first)."""
    from sqlalchemy.orm import selectinload

    rows = session.scalars(
        select(Opportunity)
        .where(Opportunity.owner_id == owner_id, Opportunity.status == OPEN)
        .options(selectinload(Opportunity.customer))
        .order_by(Opportunity.stage_changed_at.desc(), Opportunity.id.desc())
    )
    grouped: dict[int, list[Opportunity]] = {}
    for opp in rows:
        bucket = grouped.setdefault(opp.stage_id, [])
        if len(bucket) < limit_per_stage:
            bucket.append(opp)
    return grouped


def open_amounts(session: Session, owner_id: int) -> dict[int, Decimal]:
    rows = session.execute(
        select(Opportunity.stage_id, func.coalesce(func.sum(Opportunity.amount), 0))
        .where(Opportunity.owner_id == owner_id, Opportunity.status == OPEN)
        .group_by(Opportunity.stage_id)
    ).all()
    return {stage_id: Decimal(str(total)) for stage_id, total in rows}


def _follow_owner_statement(ids) -> object:
    o, c = Opportunity.__table__.c, Customer.__table__.c
    new_owner = select(c.owner_id).where(c.id == o.customer_id).scalar_subquery()
    return (
        update(Opportunity.__table__)
        .where(
            o.customer_id.in_(ids),
            o.status == OPEN,
            exists().where(c.id == o.customer_id, c.owner_id.is_not(None)),
        )
        .values(owner_id=new_owner)
    )


# Core, built once: it runs on every claim and move.
_FOLLOW_OWNER = prebuilt(lambda _dialect: _follow_owner_statement(bindparam("ids", expanding=True)))


@signals.ownership_changed.connect
def _follow_owner(
    sender=None, *, session: Session, now: datetime, customer_ids=None, id_query=None, **_kw
) -> None:
    """A customer changed hands: its open opportunities follow the new owner (set-based); unowned
    customers keep the last owner on their open opportunities until someone takes them. A sweep passes
    its ids as a SELECT (``id_query``): 100,000 bound values would pass PostgreSQL's 65,535 limit."""
    if id_query is not None:
        session.execute(_follow_owner_statement(id_query))
        return
    if not customer_ids:
        return
    session.execute(_FOLLOW_OWNER(session), {"ids": list(customer_ids)})
