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
3. **Send and record**: each outcome is written as it comes; HTTP senders (``HTTP_CONCURRENCY`` threads)
   wait until their outcome is committed before the next send (the results that arrived meanwhile share
   one commit). An attempt is charged only for a send that was made: a success is ``sent``; a failure
   goes back to ``failed`` with exponential backoff (``backoff_seconds`` × 2^(attempt−1), capped) until
   ``max_attempts``, then ``gave_up`` with the error, listed for admins with a retry button. One bad message
   (a channel raising anything) fails only itself.
4. **Endpoint backoff**: an endpoint (webhook/robot, or SMTP) that cannot be reached backs off as a whole
   (``EndpointBackoff``, doubling per failure in a row): its waiting deliveries are handed back untried
   until then, instead of each burning an attempt; the first send that gets through clears it.
5. **Stuck claims**: a row left ``sending`` longer than ``claim_timeout_seconds`` (its worker died) is
   put back to ``failed`` (charged an attempt: it may have been sent) and retried.
6. **Stopping** (``crm.queues.STOPPING``, set when the worker gets SIGTERM): no new sends; what was
   claimed and not sent is handed back at once, untried; the pass returns.

**Trade-off: at least once, not at most once.** A worker killed (SIGKILL, OOM) after the receiver accepted
a message but before its outcome was committed leaves the row ``sending``; it is retried after the
timeout, so that message can arrive twice — at most the ``HTTP_CONCURRENCY`` sends in flight at the
instant of the kill. We prefer that to losing a reminder (a missed follow-up costs a customer; a repeated
robot message costs a glance). On SIGTERM and on a Redis outage nothing is sent twice (the pass needs only
the database, and a stopping pass records everything before it returns). Receivers that must not see
repeats get a stable ``Idempotency-Key`` (webhooks) or ``Message-ID`` (email) per reminder round.
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
from sqlalchemy import Integer, and_, bindparam, delete, exists, func, literal, or_, select, text, update
from sqlalchemy.orm import Session, selectinload

from crm import clock, queues
from crm.dbutil import insert_ignore, is_postgres
from crm.models import (
    Customer,
    DeliveryStatus,
    EndpointBackoff,
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
    """Rows left ``sending`` past the claim timeout (their worker died) go back to be retried. The row may
    have been sent just before the death, so the attempt is charged (a message that kills its worker
    every time ends ``gave_up`` instead of looping)."""
    cfg = store.get(session, "dispatch")
    cutoff = now - timedelta(seconds=cfg["claim_timeout_seconds"])
    stuck = and_(_SENDING, D.claimed_at < _ts(cutoff))
    message = _("发送中断(工作进程超时或退出),已重新排队。")
    gave_up = session.execute(
        update(D)
        .where(stuck, D.attempts + 1 >= cfg["max_attempts"])
        .values(status=S.GAVE_UP, claim_token=None, last_error=message, attempts=D.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    retried = session.execute(
        update(D)
        .where(stuck)
        .values(status=S.FAILED, claim_token=None, last_error=message, next_attempt_at=now,
                attempts=D.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount  # fmt: skip
    return (gave_up or 0) + (retried or 0)


def claim(session: Session, token: str, now: datetime, limit: int = BATCH) -> list[int]:
    """Take up to ``limit`` due deliveries for this worker (conditional update). Commits."""
    pick = (
        select(D.id)
        .where(_CLAIMABLE, D.next_attempt_at <= _ts(now))
        .order_by(D.next_attempt_at, D.id)
        .limit(limit)
    )
    values = {"status": S.SENDING, "claim_token": token, "claimed_at": now}  # attempts: charged per send
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
    """Records outcomes for rows this worker holds (``claim_token``). Each outcome is written as it comes;
    ``commit`` makes the ones written so far durable (the HTTP senders wait for it before their next send,
    so a kill can repeat at most the sends in flight). An attempt is charged only for a send that was made.
    Endpoint backoff (``EndpointBackoff``) is read once per batch and kept up to date here."""

    def __init__(self, session: Session, token: str, cfg: dict, holds: dict[str, datetime] | None = None):
        self.session, self.token, self.cfg = session, token, cfg
        self.outcomes: list[Outcome] = []
        self.holds: dict[str, datetime] = holds if holds is not None else {}  # endpoint key → no send before
        self.lock = threading.Lock()
        self.down: set[str] = set()  # endpoints whose failure this batch has recorded
        self.sent: dict[str, list[int]] = defaultdict(list)  # endpoint → ids sent, not yet written

    # ---- outcomes

    def ok(self, row: _Row, endpoint: str) -> None:
        """A send that got through: written with the others of this group by ``commit``."""
        self.sent[endpoint].append(row.id)
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, S.SENT))
        if endpoint in self.holds:
            self.endpoint_ok(endpoint)

    def _write_sent(self) -> None:
        for endpoint, ids in self.sent.items():
            done = self.session.execute(
                update(D)
                .where(D.id.in_(ids), D.claim_token == self.token, D.status == S.SENDING)
                .values(status=S.SENT, sent_at=clock.now(), claim_token=None, last_error=None,
                        attempts=D.attempts + 1, endpoint=endpoint)
                .execution_options(synchronize_session=False)
            ).rowcount  # fmt: skip
            if done != len(ids):
                log.warning("%s of %s sent deliveries were reclaimed before being recorded", len(ids) - done,
                            len(ids))  # fmt: skip
        self.sent.clear()

    def fail(self, row: _Row, error: str, endpoint: str | None = None) -> None:
        """A send was made and failed: charge the attempt, retry with backoff or give up."""
        now = clock.now()
        error = (error or "")[:1000]
        attempts = row.attempts + 1
        if attempts >= self.cfg["max_attempts"]:
            values = {"status": S.GAVE_UP, "claim_token": None, "last_error": error}
            status = S.GAVE_UP
        else:
            delay = min(self.cfg["backoff_seconds"] * 2 ** (attempts - 1), self.cfg["backoff_max_seconds"])
            values = {"status": S.FAILED, "claim_token": None, "last_error": error,
                      "next_attempt_at": now + timedelta(seconds=delay)}  # fmt: skip
            status = S.FAILED
        values["attempts"] = D.attempts + 1
        if endpoint:
            values["endpoint"] = endpoint
        self._set(row, values)
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, status, error))

    def skip(self, row: _Row, reason: str) -> None:
        self._set(row, {"status": S.SKIPPED, "claim_token": None, "last_error": reason})
        self.outcomes.append(Outcome(row.id, row.channel, row.user.name, row.title, S.SKIPPED, reason))

    def later(self, row: _Row, at: datetime, note: str | None = None) -> None:
        """Hand the row back untried (quiet hours, endpoint backing off, out of time, stopping): no attempt."""
        values: dict = {"status": S.PENDING if row.attempts == 0 else S.FAILED, "claim_token": None,
                        "next_attempt_at": at}  # fmt: skip
        if note:
            values["last_error"] = note
        self._set(row, values)

    def _set(self, row: _Row, values: dict) -> None:
        self.session.execute(
            update(D)
            .where(D.id == row.id, D.claim_token == self.token, D.status == S.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def commit(self) -> None:
        """Make the outcomes written so far durable against a kill of this worker. PostgreSQL: without
        waiting for the WAL flush (``relaxed_commit``): a killed worker loses nothing committed; only a
        crash of the database server itself could lose its last fraction of a second (sent again)."""
        self._write_sent()
        relaxed_commit(self.session)
        self.session.commit()

    # ---- endpoint backoff

    def held_until(self, endpoint: str) -> datetime | None:
        with self.lock:
            until = self.holds.get(endpoint)
        return until if until is not None and until > clock.now() else None

    def hold_now(self, endpoint: str) -> None:
        """From a sender thread, at once: stop sending to an endpoint that just failed to connect (the main
        thread records the real backoff with ``endpoint_failed``)."""
        with self.lock:
            self.holds.setdefault(endpoint, clock.now() + timedelta(seconds=self.cfg["backoff_seconds"]))

    def endpoint_failed(self, endpoint: str, error: str) -> datetime:
        """Record an endpoint's failure to connect: one failure per batch, however many sends were in
        flight when it went down."""
        now = clock.now()
        if endpoint in self.down:
            return self.holds.get(endpoint, now)
        self.down.add(endpoint)
        B = EndpointBackoff
        self.session.execute(
            insert_ignore(self.session, B.__table__, ["key"]).values(
                key=endpoint, failures=0, retry_at=now, last_error=None, updated_at=now
            )
        )
        failures = self.session.scalar(select(B.failures).where(B.key == endpoint)) or 0
        delay = min(self.cfg["backoff_seconds"] * 2**failures, self.cfg["backoff_max_seconds"])
        until = now + timedelta(seconds=delay)
        self.session.execute(
            update(B).where(B.key == endpoint)
            .values(failures=B.failures + 1, retry_at=until, last_error=error[:1000], updated_at=now)
        )  # fmt: skip
        with self.lock:
            self.holds[endpoint] = until
        log.warning("delivery endpoint %s unreachable (%s); no sends to it before %s", endpoint, error, until)
        return until

    def endpoint_ok(self, endpoint: str) -> None:
        self.session.execute(delete(EndpointBackoff).where(EndpointBackoff.key == endpoint))
        self.down.discard(endpoint)
        with self.lock:
            self.holds.pop(endpoint, None)


def load_holds(session: Session, now: datetime) -> dict[str, datetime]:
    """Endpoints backing off (key → retry time; past times too: the next success clears them)."""
    B = EndpointBackoff
    return dict(session.execute(select(B.key, B.retry_at)).all())


def endpoint_key(endpoint: _Endpoint | None) -> str:
    return "smtp" if endpoint is None else f"endpoint:{endpoint.id}"


def _stopping(deadline: float) -> bool:
    return time.monotonic() > deadline or queues.STOPPING.is_set()


def _send_http(pool: ch.HttpPool, endpoint: _Endpoint, message: ch.Message, recorder: _Recorder,
               deadline: float) -> tuple[str, str | None]:  # fmt: skip
    """Runs in a sender thread: one HTTP delivery. Returns ("ok"|"fail"|"down"|"later"|"held", detail)."""
    key = endpoint_key(endpoint)
    if _stopping(deadline):
        return "later", None
    if recorder.held_until(key):
        return "held", None
    try:
        if endpoint.kind == "dingtalk":
            ch.send_dingtalk(pool, endpoint.url, endpoint.secret, message)
        elif endpoint.kind == "wecom":
            ch.send_wecom(pool, endpoint.url, message)
        else:
            ch.send_webhook(pool, endpoint.url, endpoint.secret, message)
    except ch.SendError as exc:
        if exc.connection:
            recorder.hold_now(key)
            return "down", str(exc)
        return "fail", str(exc)
    except Exception as exc:  # one bad message (e.g. a ValueError building it) fails only itself
        log.exception("delivery #%s could not be sent", message.delivery_id)
        return "fail", f"{type(exc).__name__}: {exc}"
    return "ok", None


def send_claimed(
    session: Session,
    token: str,
    cfg: dict,
    lease_deadline: float,
    sender: _HttpSender | None = None,
    targets: Targets | None = None,
) -> list[Outcome]:
    """Send the rows this worker claimed and record each outcome as it comes. HTTP deliveries go out from a
    few threads at once (each with its own keep-alive connections): waiting on the network overlaps, while
    the database work stays in this thread. Commits."""
    batch_start = clock.now()
    rows = _load(session, token, batch_start)
    targets = targets or load_targets(session)
    holds = load_holds(session, batch_start)
    endpoints = targets.endpoints
    smtp_on = targets.smtp
    session.commit()  # end the read transaction before the network work
    app_url = cfg.get("app_url") or ""
    recorder = _Recorder(session, token, cfg, holds)
    labels = {kind: _(label) for kind, label in ReminderKind.LABELS.items()}
    http_jobs: list[tuple[_Row, _Endpoint, ch.Message]] = []
    email_jobs: list[tuple[_Row, ch.Message]] = []
    try:
        for row in rows:
            try:
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
            except Exception as exc:  # a message that cannot even be built fails alone (an attempt: ours)
                log.exception("delivery #%s could not be prepared", row.id)
                recorder.fail(row, f"{type(exc).__name__}: {exc}")
        recorder.commit()
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
        recorder.commit()
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
        """Sender threads take jobs from a shared queue and hand each result to this thread, which records
        the results that have come (one commit for all of them) before the senders go on: at any moment at
        most ``threads`` sends are not recorded yet — all a kill can make us repeat."""
        work: queue.SimpleQueue = queue.SimpleQueue()
        results: queue.SimpleQueue = queue.SimpleQueue()
        aborted = threading.Event()
        for job in jobs:
            work.put(job)
        done = object()

        def drain() -> None:
            pool = self.pools.get()
            try:
                while not aborted.is_set():
                    try:
                        row, endpoint, message = work.get_nowait()
                    except queue.Empty:
                        return
                    recorded = threading.Event()
                    results.put(
                        (row, endpoint, *_send_http(pool, endpoint, message, recorder, deadline), recorded)
                    )
                    while not recorded.wait(0.5):  # the outcome is durable before the next send
                        if aborted.is_set():
                            return
            finally:
                self.pools.put(pool)
                results.put(done)

        threads = [self.executor.submit(drain) for _ in range(min(self.threads, len(jobs)))]
        running = len(threads)
        try:
            while running:
                items = [results.get()]
                while True:
                    try:
                        items.append(results.get_nowait())
                    except queue.Empty:
                        break
                acks = []
                for item in items:
                    if item is done:
                        running -= 1
                        continue
                    row, endpoint, status, detail, recorded = item
                    acks.append(recorded)
                    key = endpoint_key(endpoint)
                    if status == "ok":
                        recorder.ok(row, key)
                    elif status == "down":
                        recorder.fail(row, detail or "", key)
                        recorder.endpoint_failed(key, detail or "")
                    elif status == "fail":
                        recorder.fail(row, detail or "", key)
                    elif status == "held":
                        until = recorder.held_until(key) or clock.now()
                        recorder.later(row, until)
                    else:
                        recorder.later(row, clock.now())
                recorder.commit()
                for recorded in acks:
                    recorded.set()
        except BaseException:
            aborted.set()
            raise
        for thread in threads:
            thread.result()  # a bug in a sender thread surfaces here (its rows stay claimed and are reclaimed)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for pool in self.made:
            pool.close()


def _run_email(session: Session, recorder: _Recorder, jobs: list, deadline: float) -> None:
    """Emails go one after another over one SMTP connection, each outcome committed as it comes."""
    smtp = ch.SmtpSession(ch.SmtpConfig.from_settings(store.get(session, "smtp"), smtp_password(session)))
    key = endpoint_key(None)
    try:
        for row, message in jobs:
            until = recorder.held_until(key)
            if _stopping(deadline):
                recorder.later(row, clock.now())
            elif until:
                recorder.later(row, until)
            else:
                try:
                    ch.send_email(smtp, message)
                except ch.SendError as exc:
                    recorder.fail(row, str(exc), key)
                    if exc.connection:
                        recorder.endpoint_failed(key, str(exc))
                except Exception as exc:  # one bad message fails only itself
                    log.exception("delivery #%s could not be sent", row.id)
                    recorder.fail(row, f"{type(exc).__name__}: {exc}", key)
                else:
                    recorder.ok(row, key)
            recorder.commit()
    finally:
        smtp.close()


def send_due(session: Session, *, budget_seconds: float = 50.0, batch: int = BATCH) -> list[Outcome]:
    """Claim and send batches until nothing is due, the time budget is spent or the worker is stopping.
    Commits."""
    cfg = store.get(session, "dispatch")
    session.commit()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    sender = _HttpSender()
    targets = load_targets(session)  # what admins configured, read once per pass
    try:
        while time.monotonic() - started < budget_seconds and not queues.STOPPING.is_set():
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
    next scheduled pass continues a longer backlog) or until the worker is asked to stop. Fan-out chunks
    and send batches alternate, so the first messages leave while a large backlog is still being fanned
    out. Used by the job and the CLI."""
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
    batch = BATCH
    try:
        while time.monotonic() - started < budget_seconds and not queues.STOPPING.is_set():
            if fanning:
                counts = fan_out_chunk(session, now, targets)
                fanning = bool(counts and counts.pop("_marked"))
                for key, value in (counts or {}).items():
                    totals[key] += value
                if not fanning:
                    _analyze_if_large(session, sum(totals.values()))
            token = uuid.uuid4().hex
            if claim(session, token, clock.now(), batch):
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


def retry(session: Session, delivery_ids: list[int] | None, now: datetime, extra=None) -> int:
    """Admin retry: failed or given-up deliveries go back to the queue with a fresh attempt budget (and
    their endpoints' backoff is lifted: the admin says it is fixed)."""
    stmt = (
        update(D)
        .where(D.status.in_([S.GAVE_UP, S.FAILED]))
        .values(status=S.PENDING, attempts=0, next_attempt_at=now, claim_token=None)
        .execution_options(synchronize_session=False)
    )
    if delivery_ids is not None:
        stmt = stmt.where(D.id.in_(delivery_ids))
    if extra is not None:
        stmt = stmt.where(extra)
    endpoints = select(D.endpoint).where(D.status.in_([S.GAVE_UP, S.FAILED]), D.endpoint.is_not(None))
    if delivery_ids is not None:
        endpoints = endpoints.where(D.id.in_(delivery_ids))
    if extra is not None:
        endpoints = endpoints.where(extra)
    session.execute(delete(EndpointBackoff).where(EndpointBackoff.key.in_(endpoints)))
    return session.execute(stmt).rowcount or 0


def problem_filter():
    """Deliveries an admin should see: given up, or failing and waiting to retry."""
    return or_(D.status == S.GAVE_UP, and_(D.status == S.FAILED, D.attempts >= 1))


PROBLEM_STATUSES = (S.FAILED, S.GAVE_UP)
PROBLEMS_PER_PAGE = 50


@dataclass
class ProblemFilter:
    """The delivery problems page's filters (already validated: None means all)."""

    channel: str | None = None
    status: str | None = None
    endpoint: str | None = None

    def where(self):
        conds = [problem_filter()]
        if self.channel:
            conds.append(D.channel == self.channel)
        if self.status:
            conds.append(D.status == self.status)
        if self.endpoint:
            conds.append(D.endpoint == self.endpoint)
        return and_(*conds)


def problems_page(session: Session, filters: ProblemFilter, page: int, per_page: int = PROBLEMS_PER_PAGE):
    """One page of problem deliveries (given up first, newest first) with the total: (rows, total, pages).
    Each row is (delivery, reminder, user name, customer name)."""
    total = session.scalar(select(func.count()).select_from(D).where(filters.where())) or 0
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = session.execute(
        select(D, Reminder, User.name, Customer.name)
        .join(Reminder, Reminder.id == D.reminder_id)
        .join(User, User.id == D.user_id)
        .outerjoin(Customer, Customer.id == Reminder.customer_id)
        .where(filters.where())
        .order_by(D.status, D.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return rows, total, page, pages


def retry_matching(session: Session, filters: ProblemFilter, now: datetime) -> int:
    """Admin "retry all": every problem delivery matching the filters goes back to the queue."""
    ids = select(D.id).where(filters.where()).scalar_subquery()
    return retry(session, None, now, extra=D.id.in_(ids))


def endpoint_backoffs(session: Session) -> list[EndpointBackoff]:
    return list(session.scalars(select(EndpointBackoff).order_by(EndpointBackoff.retry_at)))
