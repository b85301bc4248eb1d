"""Dispatch (提醒发送): due reminders fan out into one ``ReminderDelivery`` row per channel, and workers
send those rows exactly once.

1. **Fan-out** (set-based): every open reminder whose notify time has come gets an ``in_app`` row
   (delivered at once: the badge reads it) and one ``pending`` row per push channel its user enabled
   and an admin configured (email, DingTalk, WeCom, webhook). ``INSERT … SELECT … ON CONFLICT DO
   NOTHING`` on the unique (reminder, channel, round) key: two fan-outs at once create each row once.
   Users in their quiet hours get ``next_attempt_at`` = the end of them.
2. **Claim**: a worker takes a batch with one conditional ``UPDATE … SET status='sending',
   claim_token=… WHERE status IN ('pending','failed') AND next_attempt_at <= now`` (PostgreSQL adds
   ``FOR UPDATE SKIP LOCKED`` so racing workers take disjoint batches; SQLite serialises writers).
   Only the holder of the token may record the outcome (``… WHERE claim_token = :mine``).
3. **Send and record**: successes are recorded in small groups; failures go back to ``failed`` with
   exponential backoff (``backoff_seconds`` × 2^(attempt−1), capped) until ``max_attempts``, then
   ``gave_up`` with the error, listed for admins with a retry button.
4. **Stuck claims**: a row left ``sending`` longer than ``claim_timeout_seconds`` (its worker died) is
   put back to ``failed`` and retried.

**Trade-off: at least once, not at most once.** A worker that dies after the receiver accepted a
message but before the row was marked ``sent`` leaves it ``sending``; it is retried after the timeout,
so that message can arrive twice. We prefer that to losing a reminder (a missed follow-up costs a
customer; a repeated robot message costs a glance). The window is kept small — outcomes are recorded
every ``MARK_EVERY`` sends, a batch stops claiming time well before the timeout, and after an outage
of Redis, SMTP or a webhook nothing is sent twice because failures are recorded before any retry.
Receivers that must not see repeats get a stable ``Idempotency-Key`` (webhooks) or ``Message-ID``
(email) per reminder round.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import Integer, and_, bindparam, exists, func, literal, or_, select, text, update
from sqlalchemy.orm import Session, selectinload

from crm import clock
from crm.dbutil import insert_ignore, is_postgres
from crm.models import (
    Customer,
    DeliveryStatus,
    Reminder,
    ReminderDelivery,
    ReminderKind,
    ReminderStatus,
    User,
    WebhookEndpoint,
)
from crm.models.types import UTCDateTime
from crm.reminders import channels as ch
from crm.reminders.services import CHANNEL_LABELS, PUSH_CHANNELS, prefs_of, quiet_until
from crm.reminders.settings import smtp_password
from crm.settings import store

log = logging.getLogger(__name__)
D = ReminderDelivery
S = DeliveryStatus
BATCH = 500
# HTTP deliveries in flight at once per worker (robots and webhooks answer in tens of milliseconds).
HTTP_CONCURRENCY = 16
FAN_OUT_CHUNK = 5000
ANALYZE_AFTER = 20000
MARK_EVERY = 100


@dataclass
class Outcome:
    """One delivery's result, as the CLI prints it."""

    delivery_id: int
    channel: str
    user_name: str
    title: str
    status: str
    error: str | None = None

    def line(self) -> str:
        text = f"{self.status:8} {self.channel:9} #{self.delivery_id} → {self.user_name}: {self.title}"
        return f"{text} ({self.error})" if self.error else text


@dataclass
class DispatchReport:
    fanned_out: dict[str, int] = field(default_factory=dict)
    reclaimed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


# ---------------------------------------------------------------- fan-out


@dataclass(frozen=True)
class _Endpoint:
    id: int
    kind: str
    url: str
    secret: str | None


@dataclass
class Targets:
    """What admins configured: SMTP on or off, and the enabled robot/webhook endpoints."""

    smtp: bool
    endpoints: dict[tuple[str, int | None], _Endpoint]

    def endpoint_for(self, kind: str, team_id: int | None) -> _Endpoint | None:
        """The team's own endpoint of that kind, else the global one."""
        return self.endpoints.get((kind, team_id)) or self.endpoints.get((kind, None))

    def available(self, channel: str, user: User) -> bool:
        if channel == "in_app":
            return True
        if channel == "email":
            return self.smtp and bool(user.email)
        return self.endpoint_for(channel, user.team_id) is not None


def load_targets(session: Session) -> Targets:
    cfg = store.get(session, "smtp")
    endpoints = {}
    query = select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)
    for ep in session.scalars(query):
        # With two of a kind for one team, the lower id wins (stable). Plain values: commits expire ORM rows.
        endpoints.setdefault((ep.kind, ep.team_id), _Endpoint(ep.id, ep.kind, ep.url, ep.secret))
    return Targets(
        smtp=bool(cfg.get("enabled") and cfg.get("host") and cfg.get("from_addr")), endpoints=endpoints
    )


def relaxed_commit(session: Session) -> None:
    """PostgreSQL: this transaction's commit need not wait for the WAL flush. Dispatch bookkeeping may lose
    its last fraction of a second in a database crash: a lost claim is claimed again, a lost "sent" is
    sent again — the at-least-once side of the trade-off described above, never a lost reminder."""
    if is_postgres(session):
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _ts(value: datetime):
    return literal(value, UTCDateTime)


def _due(now: datetime):
    # Matches the partial index ix_reminders_unfanned (coalesce(notify_at, due_at) WHERE unfanned and open).
    return and_(
        Reminder.status == ReminderStatus.OPEN,
        Reminder.fanned_out_at.is_(None),
        func.coalesce(Reminder.notify_at, Reminder.due_at) <= _ts(now),
    )


def _delivery_insert(session: Session, where, channel: str, status: str, start: datetime, now: datetime):
    columns = ["reminder_id", "user_id", "channel", "round", "status", "attempts", "next_attempt_at",
               "sent_at", "created_at"]  # fmt: skip
    sel = select(
        Reminder.id,
        Reminder.user_id,
        literal(channel),
        Reminder.round,
        literal(status),
        literal(0),
        _ts(start),
        _ts(now) if status == S.SENT else literal(None, UTCDateTime),
        _ts(now),
    ).where(where)
    stmt = insert_ignore(session, D.__table__, ["reminder_id", "channel", "round"]).from_select(columns, sel)
    return session.execute(stmt).rowcount or 0


def fan_out_chunk(
    session: Session, now: datetime, targets: Targets, chunk: int = FAN_OUT_CHUNK
) -> dict[str, int] | None:
    """Fan out the next ``chunk`` due reminders in one transaction; None when nothing is left. Commits."""
    when = func.coalesce(Reminder.notify_at, Reminder.due_at)
    pick = select(Reminder.id, Reminder.user_id).where(_due(now)).order_by(when, Reminder.id).limit(chunk)
    pg = is_postgres(session)
    if pg:
        # Workers fanning out at once take different chunks instead of queueing behind each other; the
        # rows stay locked until this chunk commits (no snooze can change their round meanwhile).
        pick = pick.with_for_update(skip_locked=True)
    relaxed_commit(session)  # a lost chunk is simply fanned out again (idempotent)
    picked = session.execute(pick).all()
    if not picked:
        session.commit()
        return None
    ids = [row[0] for row in picked]
    due = and_(_due(now), Reminder.id.in_(ids))
    user_ids = {row[1] for row in picked}
    groups: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    for user in session.scalars(select(User).where(User.id.in_(user_ids)).options(selectinload(User.team))):
        start = quiet_until(user, now) or now
        for channel in prefs_of(user).channels:
            if channel in PUSH_CHANNELS and targets.available(channel, user):
                groups[(channel, start)].append(user.id)
    counts = {"in_app": _delivery_insert(session, due, "in_app", S.SENT, now, now)}
    for (channel, start), uids in sorted(groups.items()):
        counts[channel] = counts.get(channel, 0) + _delivery_insert(
            session, and_(due, Reminder.user_id.in_(uids)), channel, S.PENDING, start, now
        )
    mark = update(Reminder).where(due)
    if not pg:
        # Without row locks, only what has its in-app row of this round (a concurrent snooze moves on).
        mark = mark.where(
            exists().where(D.reminder_id == Reminder.id, D.channel == "in_app", D.round == Reminder.round)
        )
    done = session.execute(
        mark.values(fanned_out_at=now).execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    counts["_marked"] = done or 0
    return counts


def fan_out(session: Session, now: datetime, chunk: int = FAN_OUT_CHUNK) -> dict[str, int]:
    """Create the deliveries of every reminder due by ``now`` (set-based, idempotent), ``chunk`` reminders
    per transaction so a large backlog never holds the write lock for long. Commits."""
    targets = load_targets(session)
    totals: dict[str, int] = defaultdict(int)
    while True:
        counts = fan_out_chunk(session, now, targets, chunk)
        if counts is None or not counts.pop("_marked"):  # nothing left (or nothing could be marked: no spin)
            break
        for key, value in counts.items():
            totals[key] += value
    _analyze_if_large(session, sum(totals.values()))
    return {k: v for k, v in totals.items() if v}


def _analyze_if_large(session: Session, inserted: int) -> None:
    if is_postgres(session) and inserted >= ANALYZE_AFTER:
        # A burst of new rows: refresh the planner's statistics now rather than when autovacuum gets to it.
        session.execute(text("ANALYZE reminder_deliveries"))
        session.commit()


# Conditions written out (not bound parameters) so both databases match them to the partial indexes.
_CLAIMABLE = text("reminder_deliveries.status IN ('pending', 'failed')")
_SENDING = text("reminder_deliveries.status = 'sending'")
IN_APP = text("reminder_deliveries.channel = 'in_app'")
_UNREAD = text("reminder_deliveries.channel = 'in_app' AND reminder_deliveries.read_at IS NULL")


def reclaim_stuck(session: Session, now: datetime) -> int:
    """Rows left ``sending`` past the claim timeout (their worker died) go back to be retried."""
    cfg = store.get(session, "dispatch")
    cutoff = now - timedelta(seconds=cfg["claim_timeout_seconds"])
    stuck = and_(_SENDING, D.claimed_at < _ts(cutoff))
    message = _("发送中断(工作进程超时或退出),已重新排队。")
    gave_up = session.execute(
        update(D)
        .where(stuck, D.attempts >= cfg["max_attempts"])
        .values(status=S.GAVE_UP, claim_token=None, last_error=message)
        .execution_options(synchronize_session=False)
    ).rowcount
    retried = session.execute(
        update(D)
        .where(stuck)
        .values(status=S.FAILED, claim_token=None, last_error=message, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return (gave_up or 0) + (retried or 0)


def claim(session: Session, token: str, now: datetime, limit: int = BATCH) -> list[int]:
    """Take up to ``limit`` due deliveries for this worker (conditional update). Commits."""
    pick = (
        select(D.id)
        .where(_CLAIMABLE, D.next_attempt_at <= _ts(now))
        .order_by(D.next_attempt_at, D.id)
        .limit(limit)
    )
    values = {"status": S.SENDING, "claim_token": token, "claimed_at": now, "attempts": D.attempts + 1}
    relaxed_commit(session)
    if is_postgres(session):
        # Lock the picked rows first (SKIP LOCKED: racing workers take disjoint batches), then update by
        # primary key. Two plain steps keep the plan sane even when statistics are stale after a large
        # fan-out (a join or IN-subquery may otherwise be re-run per row).
        picked = list(session.scalars(pick.with_for_update(skip_locked=True)))
        if not picked:
            session.commit()
            return []
        # The rows are locked by this transaction: no status re-check needed (and the primary key is used).
        stmt = update(D).where(D.id.in_(picked))
    else:
        # SQLite would rather sort every waiting row by (status, next_attempt_at): name the ordered index.
        sqlite_pick = text(
            "SELECT id FROM reminder_deliveries INDEXED BY ix_reminder_deliveries_claimable "
            "WHERE status IN ('pending', 'failed') AND next_attempt_at <= :due "
            "ORDER BY next_attempt_at, id LIMIT :batch"
        ).bindparams(bindparam("due", now, type_=UTCDateTime), bindparam("batch", limit))
        stmt = update(D).where(D.id.in_(sqlite_pick.columns(id=Integer)), D.status.in_([S.PENDING, S.FAILED]))
    stmt = stmt.values(**values).returning(D.id).execution_options(synchronize_session=False)
    ids = list(session.scalars(stmt))
    session.commit()
    return ids


# ---------------------------------------------------------------- send


@dataclass
class _User:
    """What sending needs of a user, copied out of the ORM (commits expire ORM objects mid-batch)."""

    id: int
    name: str
    email: str | None
    phone: str | None
    team_id: int | None
    quiet_end: datetime | None


@dataclass
class _Row:
    id: int
    channel: str
    round: int
    attempts: int
    reminder_id: int
    reminder_status: str
    reminder_round: int
    kind: str
    title: str
    body: str | None
    due_at: datetime
    customer_id: int | None
    customer_name: str | None
    user: _User


def _load(session: Session, token: str, at: datetime) -> list[_Row]:
    rows = session.execute(
        select(
            D.id,
            D.channel,
            D.round,
            D.attempts,
            Reminder.id,
            Reminder.status,
            Reminder.round,
            Reminder.kind,
            Reminder.title,
            Reminder.body,
            func.coalesce(Reminder.notify_at, Reminder.due_at),
            Reminder.customer_id,
            Customer.name,
            Reminder.user_id,
        )  # fmt: skip
        .join(Reminder, Reminder.id == D.reminder_id)
        .outerjoin(Customer, Customer.id == Reminder.customer_id)
        .where(D.claim_token == token, D.status == S.SENDING)
        .order_by(D.channel, D.id)
    ).all()
    wanted = select(User).where(User.id.in_({r[13] for r in rows})).options(selectinload(User.team))
    users = {
        u.id: _User(u.id, u.name, u.email, u.phone, u.team_id, quiet_until(u, at))
        for u in session.scalars(wanted)
    }
    return [_Row(*r[:13], user=users[r[13]]) for r in rows]


def _message(row: _Row, app_url: str, labels: dict) -> ch.Message:
    link = f"{app_url}/customers/{row.customer_id}/followup" if app_url and row.customer_id else None
    if link is None and app_url:
        link = f"{app_url}/"
    return ch.Message(
        delivery_id=row.id, reminder_id=row.reminder_id, round=row.round, kind=row.kind,
        kind_label=labels.get(row.kind, row.kind), title=row.title, body=row.body,
        due_local=clock.local(row.due_at).strftime("%Y-%m-%d %H:%M"), due_iso=row.due_at.isoformat(),
        customer_id=row.customer_id, customer_name=row.customer_name, user_id=row.user.id,
        user_name=row.user.name, user_email=row.user.email, user_phone=row.user.phone, link=link,
    )  # fmt: skip


class _Recorder:
    """Records outcomes for rows this worker holds (``claim_token``), in small groups."""

    def __init__(self, session: Session, token: str, cfg: dict):
        self.session, self.token, self.cfg = session, token, cfg
        self.sent: list[int] = []
        self.outcomes: list[Outcome] = []

    def ok(self, row: _Row) -> None:
        self.sent.append(row.id)
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, S.SENT))
        if len(self.sent) >= MARK_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.sent:
            return
        relaxed_commit(self.session)
        done = self.session.execute(
            update(D)
            .where(D.id.in_(self.sent), D.claim_token == self.token, D.status == S.SENDING)
            .values(status=S.SENT, sent_at=clock.now(), claim_token=None, last_error=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if done != len(self.sent):
            log.warning("%s of %s sent deliveries were reclaimed before being recorded", len(self.sent) - done,
                        len(self.sent))  # fmt: skip
        self.session.commit()
        self.sent = []

    def fail(self, row: _Row, error: str) -> None:
        now = clock.now()
        error = error[:1000]
        if row.attempts >= self.cfg["max_attempts"]:
            values = {"status": S.GAVE_UP, "claim_token": None, "last_error": error}
            status = S.GAVE_UP
        else:
            delay = min(
                self.cfg["backoff_seconds"] * 2 ** (row.attempts - 1), self.cfg["backoff_max_seconds"]
            )
            values = {
                "status": S.FAILED,
                "claim_token": None,
                "last_error": error,
                "next_attempt_at": now + timedelta(seconds=delay),
            }
            status = S.FAILED
        self._set(row, values)
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, status, error))

    def skip(self, row: _Row, reason: str) -> None:
        self._set(row, {"status": S.SKIPPED, "claim_token": None, "last_error": reason})
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, S.SKIPPED, reason))

    def later(self, row: _Row, at: datetime) -> None:
        """Hand the row back untried (quiet hours, or out of time): the attempt does not count."""
        self._set(
            row,
            {"status": S.PENDING, "claim_token": None, "next_attempt_at": at, "attempts": D.attempts - 1},
        )

    def _set(self, row: _Row, values: dict) -> None:
        self.session.execute(
            update(D)
            .where(D.id == row.id, D.claim_token == self.token, D.status == S.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _send_http(pool: ch.HttpPool, endpoint: _Endpoint, message: ch.Message, broken: dict, lock: threading.Lock,
               deadline: float) -> tuple[str, str | None]:  # fmt: skip
    """Runs in a sender thread: one HTTP delivery. Returns ("ok"|"fail"|"later", error)."""
    if time.monotonic() > deadline:
        return "later", None
    with lock:
        known = broken.get(endpoint.id)
    if known:
        return "fail", known
    try:
        if endpoint.kind == "dingtalk":
            ch.send_dingtalk(pool, endpoint.url, endpoint.secret, message)
        elif endpoint.kind == "wecom":
            ch.send_wecom(pool, endpoint.url, message)
        else:
            ch.send_webhook(pool, endpoint.url, endpoint.secret, message)
    except ch.SendError as exc:
        if exc.connection:
            with lock:
                broken.setdefault(endpoint.id, str(exc))
        return "fail", str(exc)
    return "ok", None


def send_claimed(
    session: Session,
    token: str,
    cfg: dict,
    lease_deadline: float,
    sender: _HttpSender | None = None,
    targets: Targets | None = None,
) -> list[Outcome]:
    """Send the rows this worker claimed and record each outcome. HTTP deliveries go out from a few
    threads at once (each with its own keep-alive connections): waiting on the network overlaps, while
    the database work stays in this thread. Commits."""
    batch_start = clock.now()
    rows = _load(session, token, batch_start)
    targets = targets or load_targets(session)
    endpoints = targets.endpoints
    smtp_on = targets.smtp
    session.commit()  # end the read transaction before the network work
    app_url = cfg.get("app_url") or ""
    recorder = _Recorder(session, token, cfg)
    labels = {kind: _(label) for kind, label in ReminderKind.LABELS.items()}
    http_jobs: list[tuple[_Row, _Endpoint, ch.Message]] = []
    email_jobs: list[tuple[_Row, ch.Message]] = []
    try:
        for row in rows:
            if row.reminder_status != ReminderStatus.OPEN or row.reminder_round != row.round:
                recorder.skip(row, _("提醒已完成、取消或改期,不再发送。"))
            elif row.user.quiet_end is not None:
                recorder.later(row, row.user.quiet_end)
            elif row.channel == "email":
                if smtp_on:
                    email_jobs.append((row, _message(row, app_url, labels)))
                else:
                    recorder.skip(row, _("邮件服务器未配置或已停用。"))
            else:
                endpoint = endpoints.get((row.channel, row.user.team_id)) or endpoints.get(
                    (row.channel, None)
                )
                if endpoint is None:
                    recorder.skip(row, _("%(c)s 未配置或已停用。", c=_(CHANNEL_LABELS[row.channel])))
                else:
                    http_jobs.append((row, endpoint, _message(row, app_url, labels)))
        if http_jobs:
            own = sender is None
            sender = sender or _HttpSender()
            try:
                sender.run(recorder, http_jobs, lease_deadline)
            finally:
                if own:
                    sender.close()
        if email_jobs:
            _run_email(session, recorder, email_jobs, lease_deadline)
        recorder.flush()
        session.commit()
    except Exception:
        session.rollback()
        raise
    return recorder.outcomes


class _HttpSender:
    """Sender threads and their keep-alive connections, kept for all batches of one ``send_due``."""

    def __init__(self, threads: int = HTTP_CONCURRENCY):
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="crm-send")
        self.pools: queue.SimpleQueue = queue.SimpleQueue()
        self.made = [ch.HttpPool() for _ in range(threads)]
        for pool in self.made:
            self.pools.put(pool)

    def run(self, recorder: _Recorder, jobs: list, deadline: float) -> None:
        """Sender threads take jobs from a shared queue; this thread records results as they come."""
        broken: dict[int, str] = {}  # endpoint → connection error: the rest of the batch fails fast
        lock = threading.Lock()
        work: queue.SimpleQueue = queue.SimpleQueue()
        results: queue.SimpleQueue = queue.SimpleQueue()
        for job in jobs:
            work.put(job)
        done = object()

        def drain() -> None:
            pool = self.pools.get()
            try:
                while True:
                    try:
                        row, endpoint, message = work.get_nowait()
                    except queue.Empty:
                        return
                    results.put((row, *_send_http(pool, endpoint, message, broken, lock, deadline)))
            finally:
                self.pools.put(pool)
                results.put(done)

        threads = [self.executor.submit(drain) for _ in range(min(self.threads, len(jobs)))]
        running = len(threads)
        while running:
            item = results.get()
            if item is done:
                running -= 1
                continue
            row, status, error = item
            if status == "ok":
                recorder.ok(row)
            elif status == "later":
                recorder.later(row, clock.now())
            else:
                recorder.fail(row, error or "")
        for thread in threads:
            thread.result()  # a bug in a sender thread surfaces here (its rows stay claimed and are reclaimed)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for pool in self.made:
            pool.close()


def _run_email(session: Session, recorder: _Recorder, jobs: list, deadline: float) -> None:
    """Emails go one after another over one SMTP connection."""
    smtp = ch.SmtpSession(ch.SmtpConfig.from_settings(store.get(session, "smtp"), smtp_password(session)))
    broken = None
    try:
        for row, message in jobs:
            if time.monotonic() > deadline:
                recorder.later(row, clock.now())
                continue
            if broken:
                recorder.fail(row, broken)
                continue
            try:
                ch.send_email(smtp, message)
            except ch.SendError as exc:
                if exc.connection:
                    broken = str(exc)
                recorder.fail(row, str(exc))
                continue
            recorder.ok(row)
    finally:
        smtp.close()


def send_due(session: Session, *, budget_seconds: float = 50.0, batch: int = BATCH) -> list[Outcome]:
    """Claim and send batches until nothing is due or the time budget is spent. Commits."""
    cfg = store.get(session, "dispatch")
    session.commit()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    sender = _HttpSender()
    targets = load_targets(session)  # what admins configured, read once per pass
    try:
        while time.monotonic() - started < budget_seconds:
            token = uuid.uuid4().hex
            ids = claim(session, token, clock.now(), batch)
            if not ids:
                break
            # Stop sending well before another worker may reclaim these rows.
            lease_deadline = time.monotonic() + cfg["claim_timeout_seconds"] * 0.6
            outcomes += send_claimed(session, token, cfg, lease_deadline, sender, targets)
    finally:
        sender.close()
    return outcomes


def dispatch_pass(
    session: Session, now: datetime | None = None, *, send: bool = True, budget_seconds: float = 50.0
) -> DispatchReport:
    """One pass: reclaim stuck claims, fan out what is due and send it, for up to ``budget_seconds`` (the
    next scheduled pass continues a longer backlog). Fan-out chunks and send batches alternate, so the
    first messages leave while a large backlog is still being fanned out. Used by the job and the CLI."""
    now = now or clock.now()
    report = DispatchReport()
    report.reclaimed = reclaim_stuck(session, now)
    session.commit()
    if not send:
        report.fanned_out = fan_out(session, now)
        return report
    cfg = store.get(session, "dispatch")
    targets = load_targets(session)
    session.commit()
    totals: dict[str, int] = defaultdict(int)
    started = time.monotonic()
    sender = _HttpSender()
    fanning = True
    try:
        while time.monotonic() - started < budget_seconds:
            if fanning:
                counts = fan_out_chunk(session, now, targets)
                fanning = bool(counts and counts.pop("_marked"))
                for key, value in (counts or {}).items():
                    totals[key] += value
                if not fanning:
                    _analyze_if_large(session, sum(totals.values()))
            token = uuid.uuid4().hex
            if claim(session, token, clock.now(), BATCH):
                lease_deadline = time.monotonic() + cfg["claim_timeout_seconds"] * 0.6
                report.outcomes += send_claimed(session, token, cfg, lease_deadline, sender, targets)
            elif not fanning:
                break
    finally:
        sender.close()
    report.fanned_out = {k: v for k, v in totals.items() if v}
    return report


# ---------------------------------------------------------------- in-app notifications and admin retry


def unread_filter(user_id: int):
    return and_(
        D.user_id == user_id,
        _UNREAD,
        exists().where(Reminder.id == D.reminder_id, Reminder.status == ReminderStatus.OPEN),
    )


def unread_count(session: Session, user: User) -> int:
    """The badge: unread in-app notifications of reminders still open."""
    return session.scalar(select(func.count()).select_from(D).where(unread_filter(user.id))) or 0


def mark_read(session: Session, user: User, now: datetime, delivery_ids: list[int] | None = None) -> int:
    """Mark some (or all) of the user's in-app notifications read. Set-based; only their own."""
    stmt = (
        update(D)
        .where(D.user_id == user.id, _UNREAD)
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    if delivery_ids is not None:
        stmt = stmt.where(D.id.in_(delivery_ids))
    return session.execute(stmt).rowcount or 0


def in_app_notifications(session: Session, user: User, limit: int = 100) -> list:
    """站内通知: (delivery, reminder, customer name) rows of the user's in-app notifications, newest first
    (the notifications page and ``GET /api/v1/notifications``)."""
    return session.execute(
        select(D, Reminder, Customer.name)
        .join(Reminder, Reminder.id == D.reminder_id)
        .outerjoin(Customer, Customer.id == Reminder.customer_id)
        .where(D.user_id == user.id, IN_APP)
        .order_by(D.created_at.desc(), D.id.desc())
        .limit(limit)
    ).all()


def mark_reminder_read(session: Session, user: User, reminder_id: int, now: datetime) -> None:
    session.execute(
        update(D)
        .where(D.user_id == user.id, D.reminder_id == reminder_id, _UNREAD)
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )


def retry(session: Session, delivery_ids: list[int] | None, now: datetime) -> int:
    """Admin retry: failed or given-up deliveries go back to the queue with a fresh attempt budget."""
    stmt = (
        update(D)
        .where(D.status.in_([S.GAVE_UP, S.FAILED]))
        .values(status=S.PENDING, attempts=0, next_attempt_at=now, claim_token=None)
        .execution_options(synchronize_session=False)
    )
    if delivery_ids is not None:
        stmt = stmt.where(D.id.in_(delivery_ids))
    return session.execute(stmt).rowcount or 0


def problem_filter():
    """Deliveries an admin should see: given up, or failing and waiting to retry."""
    return or_(D.status == S.GAVE_UP, and_(D.status == S.FAILED, D.attempts >= 1))
