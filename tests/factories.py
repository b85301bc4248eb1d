"""Small factories for test data. Each takes the session and sensible defaults; pass what matters."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import select

from crm import clock
from crm.auth.services import create_token, create_user
from crm.models import (
    Customer,
    EventKind,
    Level,
    Lifecycle,
    Pool,
    PoolAdmin,
    PoolMember,
    Role,
    Stage,
    Team,
)
from crm.pool.services import record_event

_seq = itertools.count(1)

PASSWORD = "secret-pass-1"


class Factory:
    """``make.user(role="manager")``, ``make.pool(members=[rep])``, ``make.customer(pool=p, owner=rep)`` …"""

    def __init__(self, session):
        self.session = session

    def now(self) -> datetime:
        return clock.now()

    def level(self, name: str | None = None, cap: int = 20, senior: bool = False) -> Level:
        name = name or f"职级{next(_seq)}"
        level = self.session.scalar(select(Level).where(Level.name == name))
        if level is None:
            level = Level(name=name, holding_cap=cap, is_senior=senior, rank=2 if senior else 1)
            self.session.add(level)
        else:
            level.holding_cap, level.is_senior = cap, senior
        self.session.flush()
        return level

    def team(self, name: str | None = None, manager=None, timezone: str | None = None) -> Team:
        team = Team(name=name or f"团队{next(_seq)}", manager=manager, timezone=timezone)
        self.session.add(team)
        self.session.flush()
        if manager is not None and manager.team_id is None:
            manager.team = team
        self.session.flush()
        return team

    def user(
        self,
        role: str = Role.REP,
        *,
        name: str | None = None,
        email: str | None = None,
        team: Team | None = None,
        level: Level | None = None,
        cap: int | None = None,
        senior: bool = False,
        password: str = PASSWORD,
        manager=None,
        commit: bool = True,
    ):
        n = next(_seq)
        if level is None and cap is not None:
            level = self.level(cap=cap, senior=senior)
        user = create_user(
            self.session,
            email=email or f"user{n}@test.cn",
            name=name or f"用户{n}",
            password=password,
            role=role,
            level=level,
            team=team,
            manager=manager,
            now=self.now() - timedelta(days=30),
        )
        if commit:
            self.session.commit()
        return user

    def pool(
        self, name: str | None = None, *, members=(), teams=(), admins=(), commit: bool = True, **fields
    ) -> Pool:
        fields.setdefault("daily_claim_limit", 3)
        fields.setdefault("prev_owner_rule", "none")
        fields.setdefault("prev_owner_days", 0)
        fields.setdefault("release_times", [])
        pool = Pool(name=name or f"公海{next(_seq)}", created_at=self.now() - timedelta(days=60), **fields)
        self.session.add(pool)
        self.session.flush()
        for user in members:
            self.session.add(PoolMember(pool_id=pool.id, user_id=user.id))
        for team in teams:
            self.session.add(PoolMember(pool_id=pool.id, team_id=team.id))
        for user in admins:
            self.session.add(PoolAdmin(pool_id=pool.id, user_id=user.id))
        self.session.flush()
        if commit:
            self.session.commit()
        return pool

    def customer(
        self,
        pool: Pool | None = None,
        *,
        owner=None,
        name: str | None = None,
        claimed_at: datetime | None = None,
        commit: bool = True,
        **fields,
    ) -> Customer:
        now = self.now()
        n = next(_seq)
        fields.setdefault("phone", f"139{n:08d}")
        fields.setdefault("phone_key", "+86" + fields["phone"])
        fields.setdefault("arrived_at", now - timedelta(days=10))
        fields.setdefault("score", 50)
        fields.setdefault("grade", "B")
        fields.setdefault("lifecycle", Lifecycle.LEAD)
        fields.setdefault("utm", {})
        fields.setdefault("score_breakdown", {})
        stage = self.session.scalar(select(Stage).order_by(Stage.position))
        if stage is not None:
            fields.setdefault("stage_id", stage.id)
            fields.setdefault("last_stage_change_at", fields["arrived_at"])
        customer = Customer(
            name=name or f"测试客户{n}有限公司",
            name_key=f"测试客户{n}",
            pool_id=pool.id if pool else None,
            owner_id=owner.id if owner else None,
            holding_no=1 if owner else 0,
            claimed_at=(claimed_at or now - timedelta(days=1)) if owner else None,
            pool_entered_at=None if owner else fields["arrived_at"],
            created_at=fields["arrived_at"],
            updated_at=fields["arrived_at"],
            **fields,
        )
        self.session.add(customer)
        self.session.flush()
        record_event(self.session, customer, EventKind.CREATED, fields["arrived_at"], actor_system="test",
                     pool_id=customer.pool_id)  # fmt: skip
        if owner is not None:
            record_event(self.session, customer, EventKind.ASSIGNED, customer.claimed_at, actor_system="test",
                         to_user_id=owner.id, pool_id=customer.pool_id, holding_no=1)  # fmt: skip
        if commit:
            self.session.commit()
        return customer

    def contact(self, customer: Customer, *, name: str = "李经理", commit: bool = True, **fields):
        """A contact (联系人) of ``customer`` with a phone unless given."""
        from crm.models import Contact

        n = next(_seq)
        fields.setdefault("phone", f"137{n:08d}")
        fields.setdefault("phone_key", "+86" + fields["phone"])
        contact = Contact(customer_id=customer.id, name=name, created_at=self.now(), **fields)
        self.session.add(contact)
        self.session.flush()
        if commit:
            self.session.commit()
        return contact

    def token(self, user, scopes: str = "read write") -> str:
        plain = create_token(self.session, user, "test", self.now(), scopes)
        self.session.commit()
        return plain


# ---- follow-ups and reminders (crm/followups, crm/reminders) ----


def _followup(self, customer, user, *, at=None, commit: bool = True, **fields):
    """A follow-up row as if saved at ``at`` (default now); does not touch the customer's clocks."""
    from crm.models import FollowUp

    at = at or self.now()
    fields.setdefault("channel", "phone")
    fields.setdefault("content", "电话沟通了需求")
    fields.setdefault("goal_met", False)
    fields.setdefault("next_plan", "发报价")
    fields.setdefault("next_contact_at", at + timedelta(days=3))
    followup = FollowUp(
        customer_id=customer.id, user_id=user.id, at=at, holding_no=customer.holding_no, **fields
    )
    self.session.add(followup)
    self.session.flush()
    if commit:
        self.session.commit()
    return followup


def _reminder(
    self, user, *, customer=None, due_at=None, kind="custom", title=None, commit: bool = True, **fields
):
    """An open reminder for ``user`` (default: a custom one due in an hour)."""
    import uuid

    from crm.models import Reminder

    now = self.now()
    reminder = Reminder(
        user_id=user.id,
        customer_id=customer.id if customer else None,
        kind=kind,
        title=title or f"提醒{next(_seq)}",
        due_at=due_at or now + timedelta(hours=1),
        status=fields.pop("status", "open"),
        unique_key=fields.pop("unique_key", f"test:{uuid.uuid4().hex}"),
        created_at=fields.pop("created_at", now - timedelta(minutes=5)),
        round=0,
        **fields,
    )
    self.session.add(reminder)
    self.session.flush()
    if commit:
        self.session.commit()
    return reminder


Factory.followup = _followup
Factory.reminder = _reminder
# ---------------------------------------------------------------- intake (appended by the intake feature)


def _intake_factories():
    """Factory methods for intake tests: lead forms, conflicts, import batches (added to ``Factory``)."""

    def lead_form(self, pool, *, slug: str | None = None, fields=("name", "email", "notes"), **extra):
        from crm.models import LeadForm

        form = LeadForm(
            slug=slug or f"form-{next(_seq)}", name=extra.pop("name", "官网咨询"), pool_id=pool.id,
            channel=extra.pop("channel", "官网表单"), campaign=extra.pop("campaign", None),
            thank_you=extra.pop("thank_you", "感谢您的留言"), fields=list(fields), enabled=extra.pop("enabled", True),
            created_at=self.now(), **extra,
        )  # fmt: skip
        self.session.add(form)
        self.session.commit()
        return form

    def conflict(self, new, existing, similarity: float = 90.0):
        from crm.models import DuplicateConflict

        conflict = DuplicateConflict(
            customer_id=new.id, candidate_id=existing.id, similarity=similarity, reason="test",
            status="open", created_at=self.now(),
        )  # fmt: skip
        self.session.add(conflict)
        self.session.commit()
        return conflict

    def import_batch(self, user, pool, rows: list[list] | None = None, *, filename: str = "leads.csv"):
        """A batch in ``preview`` with a stored CSV (header row + ``rows``)."""
        import csv
        import hashlib
        import io

        from crm.intake import importer
        from crm.models import ImportBatch

        rows = rows if rows is not None else [["上海示例科技有限公司", "李雷", "13800138000"]]
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["公司名称", "联系人", "手机"], *rows])
        data = buffer.getvalue().encode("utf-8")
        file_hash = hashlib.sha256(data).hexdigest()
        (importer.storage_dir() / f"{file_hash}.csv").write_bytes(data)
        batch = ImportBatch(
            user_id=user.id, pool_id=pool.id, filename=filename, file_hash=file_hash,
            mapping={"kind": "csv", "columns": {"0": "name", "1": "contact_name", "2": "phone"}},
            status="preview", rows_total=len(rows), created_at=self.now(),
        )  # fmt: skip
        self.session.add(batch)
        self.session.commit()
        return batch

    Factory.lead_form = lead_form
    Factory.conflict = conflict
    Factory.import_batch = import_batch


_intake_factories()
