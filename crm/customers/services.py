"""Customers (客户): the list of one's own / team's / all owned customers, editing fields, contacts and tags.

Editing never touches the recycle clocks (``last_followup_at``, ``claimed_at``, ``first_contact_at``,
``holding_followups``, ``last_stage_change_at``): only real follow-ups reset them (SPEC §3). Every edit
is written to the timeline as an ``Activity`` with the old and new values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import Select, func, or_, select, union, update
from sqlalchemy.orm import Session, selectinload

from crm.customers.keys import company_key, email_key, looks_like_phone, phone_key, wechat_key
from crm.dbutil import insert_ignore
from crm.inputguard import parse_id
from crm.models import Activity, Contact, Customer, Role, Tag, User, customer_tags
from crm.permissions import can_edit_customer, managed_user_ids

PAGE_SIZE = 30
SORTS = {
    "score": "评分最高",
    "stale": "最久未跟进",
    "claimed": "最近领取",
    "name": "名称",
}
# Fields a user may edit on the customer form, with their labels for the timeline.
EDITABLE = {
    "name": "客户名称",
    "kind": "类型",
    "contact_name": "联系人",
    "job_title": "职位",
    "job_level": "职级",
    "phone": "电话",
    "email": "邮箱",
    "wechat": "微信",
    "address": "地址",
    "region": "区域",
    "industry": "行业",
    "company_size": "规模",
    "source": "来源",
    "channel": "渠道",
    "campaign": "活动",
    "notes": "备注",
}


class CustomerError(ValueError):
    """A refused edit; ``field`` names the input at fault."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


# ---------------------------------------------------------------- list


@dataclass
class ListFilters:
    q: str = ""
    grade: str = ""
    stage_id: int | None = None
    owner: str = ""  # "" everyone visible · a user id
    tag_id: int | None = None
    region: str = ""
    sort: str = "score"
    page: int = 1

    @classmethod
    def from_args(cls, args) -> ListFilters:
        def text(name: str, limit: int = 60) -> str:
            return str(args.get(name) or "").strip()[:limit]

        def number(name: str) -> int | None:
            return parse_id(text(name, 12))

        grade = text("grade", 1).upper()
        sort = text("sort", 12)
        owner = text("owner", 12)
        return cls(
            q=text("q", 80),
            grade=grade if grade in ("A", "B", "C") else "",
            stage_id=number("stage"),
            owner=owner if parse_id(owner) else "",
            tag_id=number("tag"),
            region=text("region"),
            sort=sort if sort in SORTS else "score",
            page=max(1, min(number("page") or 1, 10000)),
        )

    def query_args(self, **override) -> dict:
        args = {
            "q": self.q,
            "grade": self.grade,
            "stage": self.stage_id or "",
            "owner": self.owner,
            "tag": self.tag_id or "",
            "region": self.region,
            "sort": "" if self.sort == "score" else self.sort,
        } | override
        return {k: v for k, v in args.items() if v}


def visible_customers(session: Session, user: User) -> Select:
    """The customers a user's list may show: a rep's own, a manager's team's, everyone's for admins."""
    stmt = select(Customer).where(Customer.merged_into_id.is_(None))
    ids = managed_user_ids(session, user)
    if ids is None:
        return stmt
    return stmt.where(Customer.owner_id.in_(ids))


def search_condition(q: str, *, contact_name: bool = True):
    """Phone numbers match the normalised key exactly (customer or contact); other text the name, and the
    contact name unless ``contact_name`` is false (pool boards: a masked pool must not leak who the contact is)."""
    if looks_like_phone(q):
        key = phone_key(q)
        # One id set from two indexed lookups (an OR across the two tables would scan the customers).
        return Customer.id.in_(
            union(
                select(Customer.id).where(Customer.phone_key == key),
                select(Contact.customer_id).where(Contact.phone_key == key),
            )
        )
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    by_name = Customer.name.like(pattern, escape="\\")
    return or_(by_name, Customer.contact_name.like(pattern, escape="\\")) if contact_name else by_name


def customer_list(
    session: Session, user: User, filters: ListFilters, limit: int = PAGE_SIZE
) -> tuple[list[Customer], bool]:
    """One page of the customer list and whether there are more."""
    stmt = visible_customers(session, user)
    if filters.owner.isdigit():
        stmt = stmt.where(Customer.owner_id == int(filters.owner))
    elif user.role == Role.ADMIN:
        # Customers in pools are browsed on the pool boards (indexed for that); the list shows holdings.
        stmt = stmt.where(Customer.owner_id.is_not(None))
    if filters.q:
        stmt = stmt.where(search_condition(filters.q))
    if filters.grade:
        stmt = stmt.where(Customer.grade == filters.grade)
    if filters.stage_id:
        stmt = stmt.where(Customer.stage_id == filters.stage_id)
    if filters.region:
        stmt = stmt.where(Customer.region == filters.region)
    if filters.tag_id:
        stmt = stmt.where(
            Customer.id.in_(
                select(customer_tags.c.customer_id).where(customer_tags.c.tag_id == filters.tag_id)
            )
        )
    order = {
        "score": (Customer.score.desc(), Customer.id.desc()),
        "stale": (
            func.coalesce(Customer.last_followup_at, Customer.claimed_at, Customer.created_at).asc(),
            Customer.id.asc(),
        ),
        "claimed": (Customer.claimed_at.desc(), Customer.id.desc()),
        "name": (Customer.name.asc(), Customer.id.asc()),
    }[filters.sort]
    stmt = (
        stmt.options(selectinload(Customer.tags), selectinload(Customer.owner), selectinload(Customer.stage))
        .order_by(*order)
        .offset((filters.page - 1) * limit)
        .limit(limit + 1)
    )
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


# ---------------------------------------------------------------- edits


def _clean(value):
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _activity(
    session: Session, customer: Customer, user: User, now: datetime, title: str, data: dict
) -> None:
    session.add(
        Activity(customer_id=customer.id, kind="edit", at=now, user_id=user.id, title=title[:200], data=data)
    )


def update_customer(session: Session, customer: Customer, user: User, data: dict, now: datetime) -> list[str]:
    """Apply edited fields (keys of ``EDITABLE`` present in ``data``); returns the labels that changed.

    Keeps normalised keys (phone/email/WeChat/company name) in step. Does not commit. Never touches the
    recycle clocks. Raises ``CustomerError`` when not allowed or invalid.
    """
    if not can_edit_customer(session, user, customer):
        raise CustomerError(_("你不能修改这个客户。"), status=403)
    changes: dict[str, list] = {}
    for name in EDITABLE:
        if name not in data:
            continue
        new = _clean(data[name])
        if name == "name" and not new:
            raise CustomerError(_("请填写客户名称。"), "name")
        old = getattr(customer, name)
        if new != old:
            changes[name] = [old, new]
    if not changes:
        return []
    values = {name: new for name, (_old, new) in changes.items()}
    if "phone" in changes:
        values["phone_key"] = phone_key(values["phone"])
    if "email" in changes:
        values["email_key"] = email_key(values["email"])
    if "wechat" in changes:
        values["wechat_key"] = wechat_key(values["wechat"])
    if "name" in changes:
        values["name_key"] = company_key(values["name"])
    values["updated_at"] = now
    # A targeted UPDATE (not an ORM flush of the whole row) so a follow-up saved at the same moment
    # keeps its clock values.
    session.execute(
        update(Customer)
        .where(Customer.id == customer.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    labels = [_(EDITABLE[name]) for name in changes]
    _activity(
        session, customer, user, now, _("修改了客户资料:%(fields)s", fields="、".join(labels)),
        {"changes": {k: [_jsonable(v) for v in pair] for k, pair in changes.items()}},
    )  # fmt: skip
    session.flush()
    session.refresh(customer)
    return labels


def _jsonable(value):
    return value if value is None or isinstance(value, int | str) else str(value)


def duplicate_phone_owner(session: Session, customer: Customer) -> Customer | None:
    """Another live customer with the same normalised phone (shown as a warning after an edit)."""
    if not customer.phone_key:
        return None
    return session.scalar(
        select(Customer)
        .where(
            Customer.phone_key == customer.phone_key,
            Customer.id != customer.id,
            Customer.merged_into_id.is_(None),
        )
        .limit(1)
    )


def save_contact(
    session: Session,
    customer: Customer,
    user: User,
    data: dict,
    now: datetime,
    contact: Contact | None = None,
) -> Contact:
    """Add or edit a contact (联系人) of a customer; the primary flag is unique per customer. Does not commit."""
    if not can_edit_customer(session, user, customer):
        raise CustomerError(_("你不能修改这个客户。"), status=403)
    if contact is not None and contact.customer_id != customer.id:
        raise CustomerError(_("联系人不存在。"), status=404)
    name = _clean(data.get("name"))
    if not name:
        raise CustomerError(_("请填写联系人姓名。"), "name")
    if not any(_clean(data.get(k)) for k in ("phone", "email", "wechat")):
        raise CustomerError(_("电话、邮箱、微信至少填写一项。"), "phone")
    is_new = contact is None
    if contact is None:
        contact = Contact(customer_id=customer.id, created_at=now)
        session.add(contact)
    contact.name = name
    for key in ("job_title", "job_level", "phone", "email", "wechat"):
        setattr(contact, key, _clean(data.get(key)))
    contact.phone_key = phone_key(contact.phone)
    contact.email_key = email_key(contact.email)
    contact.wechat_key = wechat_key(contact.wechat)
    contact.is_primary = bool(data.get("is_primary"))
    session.flush()
    if contact.is_primary:
        session.execute(
            update(Contact)
            .where(Contact.customer_id == customer.id, Contact.id != contact.id)
            .values(is_primary=False)
            .execution_options(synchronize_session=False)
        )
    title = _("添加了联系人 %(name)s", name=name) if is_new else _("修改了联系人 %(name)s", name=name)
    _activity(session, customer, user, now, title, {"contact_id": contact.id})
    session.flush()
    return contact


def set_tags(session: Session, customer: Customer, user: User, names: list[str], now: datetime) -> list[str]:
    """Replace the customer's user tags with ``names`` (new tags are created); system tags (高难度) stay.

    Returns the resulting tag names. Does not commit.
    """
    if not can_edit_customer(session, user, customer):
        raise CustomerError(_("你不能修改这个客户。"), status=403)
    wanted = list(dict.fromkeys(n.strip()[:40] for n in names if n and n.strip()))
    if len(wanted) > 20:
        raise CustomerError(_("一个客户最多 20 个标签。"), "tags")
    existing = {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(wanted)))} if wanted else {}
    blocked = [n for n, t in existing.items() if t.system and t not in customer.tags]
    if blocked:
        raise CustomerError(_("「%(name)s」是系统标签,由规则自动设置。", name=blocked[0]), "tags")
    before = sorted(t.name for t in customer.tags)
    missing = [n for n in wanted if n not in existing]
    if missing:
        # Two people may create the same new tag at once: insert-if-absent, then read them back.
        session.execute(
            insert_ignore(session, Tag.__table__, ["name"]), [{"name": n, "system": False} for n in missing]
        )
        existing |= {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(missing)))}
    tags = [t for t in customer.tags if t.system]
    for name in wanted:
        tag = existing[name]
        if tag not in tags:
            tags.append(tag)
    customer.tags = tags
    session.flush()
    after = sorted(t.name for t in customer.tags)
    if after != before:
        _activity(session, customer, user, now, _("修改了标签:%(tags)s", tags="、".join(after) or "—"),
                  {"tags": [before, after]})  # fmt: skip
        session.flush()
    return after
