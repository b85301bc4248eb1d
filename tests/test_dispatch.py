"""Dispatch: fan-out per channel, exactly once per reminder and channel under racing workers (threads, and
real ``rq worker`` processes on Redis db ``TEST_REDIS_URL``), retries with backoff against a real local
receiver that fails at first, giving up with the error shown to admins, stuck claims, quiet hours,
DingTalk signing, email through a local SMTP server, and Redis being down while a follow-up is saved."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select, update

from crm import clock
from crm.extensions import db
from crm.models import EndpointBackoff, Reminder, ReminderDelivery, Role, WebhookEndpoint
from crm.reminders import dispatch
from crm.reminders.debug_smtp import DebugSmtpServer
from crm.settings import store
from tests.conftest import IS_PG, redis_url_for_tests
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
D = ReminderDelivery


def _endpoint(url: str, kind: str = "webhook", secret: str | None = None, team_id: int | None = None):
    """Endpoints made directly: the https rule is the admin form's (tested in test_channels_admin)."""
    ep = WebhookEndpoint(kind=kind, name=kind, url=url, secret=secret, team_id=team_id, enabled=True, extra={},
                         created_at=clock.now())  # fmt: skip
    db.session.add(ep)
    db.session.commit()
    return ep


def _due_reminders(make, user, n: int, at: datetime):
    for i in range(n):
        make.reminder(user, title=f"提醒 {i}", due_at=at - timedelta(minutes=1 + i), commit=False)
    db.session.commit()


def _deliveries(channel: str | None = None):
    db.session.expire_all()
    query = select(D).order_by(D.id)
    if channel:
        query = query.where(D.channel == channel)
    return db.session.scalars(query).all()


# ---------------------------------------------------------------- fan-out


def test_fan_out_makes_one_row_per_enabled_channel_once(make, rep, admin):
    now = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    team = make.team("钉钉组")
    rep.team = team
    rep.notify_prefs = {"channels": ["in_app", "email", "dingtalk", "webhook", "wecom"]}
    db.session.commit()
    _endpoint("https://oapi.dingtalk.com/robot/send?access_token=t", "dingtalk", team_id=team.id)
    _endpoint("https://hooks.example.com/crm")  # global generic webhook; no WeCom configured
    store.put(
        db.session, "smtp", {"enabled": True, "host": "127.0.0.1", "from_addr": "crm@example.com"}, admin, now
    )
    db.session.commit()
    with clock.frozen(now):
        make.reminder(rep, due_at=now - timedelta(minutes=5))
        make.reminder(rep, due_at=now + timedelta(minutes=5))  # not yet
        counts = dispatch.fan_out(db.session, now)
        db.session.commit()
        assert counts == {"in_app": 1, "email": 1, "dingtalk": 1, "webhook": 1}
        assert dispatch.fan_out(db.session, now) == {}
    rows = _deliveries()
    assert sorted(d.channel for d in rows) == ["dingtalk", "email", "in_app", "webhook"]
    in_app = next(d for d in rows if d.channel == "in_app")
    assert in_app.status == "sent" and in_app.user_id == rep.id
    assert all(d.status == "pending" for d in rows if d.channel != "in_app")


def test_two_fan_outs_at_once_create_each_delivery_once(app, make, rep):
    now = clock.now()
    _endpoint("https://hooks.example.com/crm")
    _due_reminders(make, rep, 40, now)
    barrier = threading.Barrier(2)
    errors = []

    def run():
        with app.app_context():
            try:
                barrier.wait()
                dispatch.fan_out(db.session, now)
                db.session.commit()
            except Exception as exc:
                errors.append(exc)
                db.session.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if IS_PG:
        assert not errors
    assert len(_deliveries("in_app")) == 40 and len(_deliveries("webhook")) == 40


def test_quiet_hours_hold_push_deliveries_until_they_end(make, rep):
    rep.notify_prefs = {"channels": ["in_app", "webhook"], "quiet_start": "22:00", "quiet_end": "08:00"}
    db.session.commit()
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        late_evening = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # 23:00 Shanghai
        with clock.frozen(late_evening):
            make.reminder(rep, due_at=late_evening - timedelta(minutes=1))
            dispatch.dispatch_pass(db.session)
        [push] = _deliveries("webhook")
        assert push.status == "pending"
        assert push.next_attempt_at == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)  # 08:00 Shanghai
        assert _deliveries("in_app")[0].status == "sent"  # the badge shows it at once
        assert receiver.requests == 0
        with clock.frozen(datetime(2026, 3, 11, 0, 1, tzinfo=UTC)):
            dispatch.dispatch_pass(db.session)
        assert receiver.requests == 1 and _deliveries("webhook")[0].status == "sent"


# ---------------------------------------------------------------- exactly once


def test_two_workers_racing_send_each_delivery_exactly_once(app, make, rep):
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        now = clock.now()
        _due_reminders(make, rep, 60, now)
        dispatch.fan_out(db.session, now)
        db.session.commit()
        barrier = threading.Barrier(2)
        errors = []

        def worker():
            with app.app_context():
                try:
                    barrier.wait()
                    for _ in range(50):  # SQLite may refuse a claim while the other writes: try again
                        try:
                            dispatch.send_due(db.session, batch=5)
                        except Exception as exc:  # noqa: BLE001 - "database is locked" on SQLite
                            db.session.rollback()
                            if IS_PG:
                                raise
                            errors.append(exc)
                            continue
                        if not db.session.scalar(
                            select(func.count()).select_from(D).where(D.status == "pending")
                        ):
                            break
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert receiver.requests == 60
        assert len(receiver.keys) == 60 and set(receiver.keys.values()) == {1}
        assert {d.status for d in _deliveries("webhook")} == {"sent"}


def _run_rq_workers(app, n: int, timeout: float = 90) -> list[subprocess.CompletedProcess]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL=redis_url_for_tests(),
        SECRET_KEY=app.config["SECRET_KEY"],
        CRM_INSTANCE_PATH=str(Path(app.instance_path)),
        PYTHONPATH=str(ROOT),
    )
    rq = str(Path(sys.executable).parent / "rq")
    cmd = [
        rq,
        "worker",
        "--burst",
        "--url",
        redis_url_for_tests(),
        "--worker-class",
        "rq.worker.SimpleWorker",
        "dispatch",
    ]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(n)]  # fmt: skip
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace")))
    return results


@pytest.fixture
def redis_queue(app):
    from crm import queues

    conn = Redis.from_url(redis_url_for_tests())
    conn.flushdb()
    yield queues
    conn.flushdb()


def test_rq_workers_on_redis_deliver_each_reminder_exactly_once(app, make, rep, redis_queue):
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        _due_reminders(make, rep, 80, clock.now())
        db.session.commit()
        db.engine.dispose()
        for _ in range(4):  # more jobs than workers: they race for the same rows
            assert redis_queue.enqueue("workers.jobs.dispatch_due", queue="dispatch") is not None
        results = _run_rq_workers(app, 2)
        for result in results:
            assert result.returncode == 0, result.stdout
            assert "Traceback" not in result.stdout, result.stdout
        assert receiver.requests == 80
        assert set(receiver.keys.values()) == {1} and len(receiver.keys) == 80
    assert {d.status for d in _deliveries("webhook")} == {"sent"}
    assert len(_deliveries("in_app")) == 80


# ---------------------------------------------------------------- failures, retries, giving up


def test_a_receiver_failing_the_first_three_attempts_gets_it_once_on_the_fourth(make, rep):
    t0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    with Receiver(fail_first=3) as receiver:
        _endpoint(receiver.url + "/hook")
        with clock.frozen(t0):
            reminder = make.reminder(rep, due_at=t0 - timedelta(minutes=1), title="回访星河科技")
        waits = []
        at = t0
        for _ in range(4):
            with clock.frozen(at):
                dispatch.dispatch_pass(db.session)
            [row] = _deliveries("webhook")
            if row.status == "sent":
                break
            assert row.status == "failed" and "HTTP 500" in row.last_error
            waits.append((row.next_attempt_at - at).total_seconds())
            with clock.frozen(row.next_attempt_at - timedelta(seconds=1)):
                dispatch.dispatch_pass(db.session)  # too early: nothing is tried
            at = row.next_attempt_at
        assert waits == [60, 120, 240]  # exponential backoff
        assert receiver.requests == 4
        assert len(receiver.received) == 1
        got = receiver.received[0]
        assert got["json"]["reminder"]["title"] == "回访星河科技"
        assert got["headers"]["Idempotency-Key"] == f"reminder-{reminder.id}-0"
    [row] = _deliveries("webhook")
    assert row.status == "sent" and row.attempts == 4 and row.last_error is None


def test_gives_up_after_the_limit_shows_the_error_and_admin_retry_sends(make, rep, admin, admin_client):
    t0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    store.put(db.session, "dispatch", {"max_attempts": 2, "backoff_seconds": 10}, admin, t0)
    db.session.commit()
    with Receiver(fail_first=2) as receiver:
        _endpoint(receiver.url + "/hook")
        with clock.frozen(t0):
            make.reminder(rep, due_at=t0 - timedelta(minutes=1), title="确认合同")
            dispatch.dispatch_pass(db.session)
        with clock.frozen(t0 + timedelta(seconds=11)):
            dispatch.dispatch_pass(db.session)
        [row] = _deliveries("webhook")
        assert row.status == "gave_up" and row.attempts == 2 and "HTTP 500" in row.last_error
        with clock.frozen(t0 + timedelta(hours=1)):
            dispatch.dispatch_pass(db.session)
            assert receiver.requests == 2  # given up: no more tries
            page = admin_client.get("/admin/deliveries").get_data(as_text=True)
            assert "确认合同" in page and "HTTP 500" in page and "已放弃" in page
            assert admin_client.post("/admin/deliveries/retry", data={"id": str(row.id)}).status_code == 302
            dispatch.dispatch_pass(db.session)
        assert receiver.requests == 3 and len(receiver.received) == 1
    assert _deliveries("webhook")[0].status == "sent"


def test_unreachable_endpoint_backs_off_as_a_whole_without_burning_attempts(make, rep):
    """Only the sends actually made are charged an attempt; the endpoint backs off as a whole (the others
    wait untried), a pass during the backoff sends nothing, and once it is reachable again all arrive."""
    ep = _endpoint("http://127.0.0.1:9/hook")  # nothing listens on the discard port
    now = clock.now()
    _due_reminders(make, rep, 40, now)
    started = time.monotonic()
    report = dispatch.dispatch_pass(db.session, now)
    assert time.monotonic() - started < 10
    rows = _deliveries("webhook")
    tried = [d for d in rows if d.attempts]
    assert 1 <= len(tried) <= dispatch.HTTP_CONCURRENCY
    assert report.count("failed") == len(tried) and report.count("gave_up") == 0
    assert all(d.attempts == 1 and "127.0.0.1" in d.last_error for d in tried)
    state = db.session.get(EndpointBackoff, f"endpoint:{ep.id}")
    assert state.failures == 1 and state.retry_at > now
    waiting = [d for d in rows if not d.attempts]
    assert all(d.status == "pending" and d.next_attempt_at >= state.retry_at for d in waiting)
    assert dispatch.dispatch_pass(db.session, clock.now()).outcomes == []  # backing off: nothing tried
    with Receiver() as receiver:
        ep.url = receiver.url + "/hook"
        db.session.commit()
        later = state.retry_at + timedelta(hours=2)
        with clock.frozen(later):
            dispatch.dispatch_pass(db.session, later)
        assert receiver.requests == 40
    assert {d.status for d in _deliveries("webhook")} == {"sent"}
    assert db.session.get(EndpointBackoff, f"endpoint:{ep.id}") is None


def test_a_message_that_raises_fails_alone_and_the_batch_is_kept(make, rep, monkeypatch):
    real = dispatch.ch.send_webhook

    def picky(pool, url, secret, message):
        if message.title == "提醒 3":
            raise ValueError("bad message")
        return real(pool, url, secret, message)

    monkeypatch.setattr(dispatch.ch, "send_webhook", picky)
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        _due_reminders(make, rep, 10, clock.now())
        report = dispatch.dispatch_pass(db.session, clock.now())
        assert receiver.requests == 9
    assert report.count("sent") == 9 and report.count("failed") == 1
    bad = [d for d in _deliveries("webhook") if d.status != "sent"]
    assert len(bad) == 1 and "ValueError: bad message" in bad[0].last_error and bad[0].attempts == 1


def test_a_stuck_sending_claim_is_reclaimed_and_sent_once(make, rep):
    t0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        with clock.frozen(t0):
            make.reminder(rep, due_at=t0 - timedelta(minutes=1))
            make.reminder(rep, due_at=t0 - timedelta(minutes=1))
            dispatch.fan_out(db.session, t0)
            db.session.commit()
        stuck, fresh = _deliveries("webhook")
        # One worker died 10 minutes ago mid-batch; another claimed a row a second ago and is sending.
        db.session.execute(update(D).where(D.id == stuck.id).values(
            status="sending", claim_token="dead", claimed_at=t0 - timedelta(minutes=10), attempts=1))  # fmt: skip
        db.session.execute(update(D).where(D.id == fresh.id).values(
            status="sending", claim_token="alive", claimed_at=t0 + timedelta(minutes=4), attempts=1))  # fmt: skip
        db.session.commit()
        with clock.frozen(t0 + timedelta(minutes=5)):
            report = dispatch.dispatch_pass(db.session)
        assert report.reclaimed == 1
        assert receiver.requests == 1
        stuck, fresh = _deliveries("webhook")
        # One earlier attempt, one charged by the reclaim (the dead worker may have sent it), one now.
        assert stuck.status == "sent" and stuck.attempts == 3
        assert fresh.status == "sending" and fresh.claim_token == "alive"  # not stolen


def test_completed_reminders_are_not_sent(make, rep):
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        now = clock.now()
        r = make.reminder(rep, due_at=now - timedelta(minutes=1))
        dispatch.fan_out(db.session, now)
        db.session.commit()
        db.session.execute(update(Reminder).where(Reminder.id == r.id).values(status="done"))
        db.session.commit()
        report = dispatch.dispatch_pass(db.session)
        assert receiver.requests == 0
        assert report.count("skipped") == 1


# ---------------------------------------------------------------- channels


def test_dingtalk_robot_gets_a_signed_request_and_errcode_is_checked(make, rep):
    rep.phone = "13800138000"
    rep.notify_prefs = {"channels": ["in_app", "dingtalk"]}
    db.session.commit()
    secret = "SEC0123456789abcdef"
    with Receiver(reply={"errcode": 0, "errmsg": "ok"}) as receiver:
        _endpoint(receiver.url + "/robot/send?access_token=tok123", "dingtalk", secret=secret)
        make.reminder(rep, due_at=clock.now() - timedelta(minutes=1), title="联系王总")
        before = int(time.time() * 1000)
        dispatch.dispatch_pass(db.session)
        [got] = receiver.received
        assert got["path"] == "/robot/send" and got["query"]["access_token"] == ["tok123"]
        ts = got["query"]["timestamp"][0]
        assert before - 5000 <= int(ts) <= int(time.time() * 1000)
        expected = base64.b64encode(
            hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        )
        assert got["query"]["sign"][0] == expected.decode()
        assert got["json"]["msgtype"] == "markdown" and "联系王总" in got["json"]["markdown"]["text"]
        assert got["json"]["at"]["atMobiles"] == ["13800138000"]
        # A robot that answers errcode ≠ 0 (e.g. a wrong signature) is a failure with its message.
        receiver.reply = {"errcode": 310000, "errmsg": "sign not match"}
        make.reminder(rep, due_at=clock.now() - timedelta(minutes=1))
        dispatch.dispatch_pass(db.session)
    failed = [d for d in _deliveries("dingtalk") if d.status == "failed"]
    assert len(failed) == 1 and "310000" in failed[0].last_error and "sign not match" in failed[0].last_error


def test_wecom_robot_gets_markdown(make, rep):
    rep.notify_prefs = {"channels": ["in_app", "wecom"]}
    db.session.commit()
    with Receiver(reply={"errcode": 0, "errmsg": "ok"}) as receiver:
        _endpoint(receiver.url + "/cgi-bin/webhook/send?key=k1", "wecom")
        make.reminder(rep, due_at=clock.now() - timedelta(minutes=1), title="约演示")
        dispatch.dispatch_pass(db.session)
        [got] = receiver.received
    assert got["json"]["msgtype"] == "markdown" and "约演示" in got["json"]["markdown"]["content"]


def test_email_goes_through_smtp_and_an_smtp_outage_is_retried(make, rep, admin):
    rep.notify_prefs = {"channels": ["in_app", "email"]}
    db.session.commit()
    t0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    server = DebugSmtpServer(("127.0.0.1", 0))
    port = server.port
    server.server_close()  # SMTP down at first
    store.put(db.session, "smtp", {"enabled": True, "host": "127.0.0.1", "port": port, "from_addr": "crm@example.com"},
              admin, t0)  # fmt: skip
    db.session.commit()
    with clock.frozen(t0):
        r = make.reminder(rep, due_at=t0 - timedelta(minutes=1), title="发报价单")
        dispatch.dispatch_pass(db.session)
    [row] = _deliveries("email")
    assert row.status == "failed" and "SMTP" in row.last_error
    server = DebugSmtpServer(("127.0.0.1", port))
    server.start()
    try:
        with clock.frozen(t0 + timedelta(minutes=2)):
            dispatch.dispatch_pass(db.session)
            dispatch.dispatch_pass(db.session)  # a second pass sends nothing twice
    finally:
        server.stop()
    assert len(server.messages) == 1
    _sender, recipients, message = server.messages[0]
    assert recipients == [rep.email] and "发报价单" in message["Subject"]
    assert message["Message-ID"] == f"<reminder-{r.id}-0@gonghai-crm>"
    assert _deliveries("email")[0].status == "sent"


# ---------------------------------------------------------------- Redis down, CLI


def test_redis_down_during_a_followup_save_then_the_reminder_is_delivered(
    app, make, rep, rep_client, redis_queue
):
    from crm import queues
    from crm.models import FollowUp

    pool = make.pool(members=[rep])
    customer = make.customer(pool, owner=rep)
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/4"  # nothing listens there
    app.extensions.pop("crm_redis", None)
    saved_at = clock.now() - timedelta(days=2)
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        with clock.frozen(saved_at):
            resp = rep_client.post(
                f"/customers/{customer.id}/followup",
                data={"channel": "phone", "content": "电话沟通", "goal_met": "n", "next_plan": "回电确认",
                      "next_contact_at": clock.to_local_naive(saved_at + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")},
            )  # fmt: skip
            assert resp.status_code == 303
            assert queues.enqueue("workers.jobs.dispatch_due", queue="dispatch") is None  # Redis is down
        assert db.session.scalar(select(func.count()).select_from(FollowUp)) == 1
        assert db.session.scalar(select(Reminder).where(Reminder.kind == "next_contact")).status == "open"
        # Redis is back: the scheduler's next dispatch job delivers the backlog, once.
        app.config["REDIS_URL"] = redis_url_for_tests()
        app.extensions.pop("crm_redis", None)
        app.extensions.pop("crm_redis_down_until", None)  # as if enqueue's 30 s back-off had passed
        db.engine.dispose()
        assert queues.enqueue("workers.jobs.dispatch_due", queue="dispatch") is not None
        assert queues.enqueue("workers.jobs.dispatch_due", queue="dispatch") is not None
        for result in _run_rq_workers(app, 1):
            assert result.returncode == 0, result.stdout
        assert receiver.requests == 1
        assert "回电确认" in receiver.received[0]["json"]["reminder"]["title"]


def test_cli_dispatch_prints_what_it_sent(app, make, rep):
    with Receiver() as receiver:
        _endpoint(receiver.url + "/hook")
        make.reminder(rep, due_at=datetime(2026, 3, 10, 1, 0, tzinfo=UTC), title="给王总发报价")
        db.engine.dispose()
        result = app.test_cli_runner().invoke(
            args=["crm", "dispatch", "--as-of", "2026-03-10T10:00:00+08:00"]
        )
        assert result.exit_code == 0, result.output
        assert "fanned out in_app 1, webhook 1" in result.output
        assert "sent" in result.output and "给王总发报价" in result.output and rep.name in result.output
        assert receiver.requests == 1
        bad = app.test_cli_runner().invoke(args=["crm", "dispatch", "--as-of", "yesterday"])
        assert bad.exit_code != 0 and "ISO 8601" in bad.output


def test_badge_counts_unread_in_app_notifications(rep_client, make, rep):
    now = clock.now()
    make.reminder(rep, due_at=now - timedelta(minutes=2), title="回访 A")
    make.reminder(rep, due_at=now - timedelta(minutes=1), title="回访 B")
    dispatch.fan_out(db.session, now)
    db.session.commit()
    html = rep_client.get("/notifications/badge").get_data(as_text=True)
    assert '<span class="dot">2</span>' in html
    page = rep_client.get("/notifications").get_data(as_text=True)
    assert "回访 A" in page and "未读" in page
    first = _deliveries("in_app")[0]
    assert rep_client.get(f"/notifications/{first.id}").status_code == 302
    assert '<span class="dot">1</span>' in rep_client.get("/notifications/badge").get_data(as_text=True)
    rep_client.post("/notifications/read")
    assert 'class="dot"' not in rep_client.get("/notifications/badge").get_data(as_text=True)


def test_other_users_cannot_open_my_notification(app, make, rep):
    now = clock.now()
    make.reminder(rep, due_at=now - timedelta(minutes=1))
    dispatch.fan_out(db.session, now)
    db.session.commit()
    from tests.conftest import login

    other = make.user(Role.REP)
    client = app.test_client()
    login(client, other)
    assert client.get(f"/notifications/{_deliveries('in_app')[0].id}").status_code == 404


# ---------------------------------------------------------------- the delivery problems page


def _problem_rows(make, rep, n: int, status: str, channel: str = "webhook", endpoint: str | None = None):
    now = clock.now()
    for i in range(n):
        reminder = make.reminder(
            rep, title=f"{status} {channel} {i}", due_at=now - timedelta(hours=1), commit=False
        )
        db.session.add(D(reminder_id=reminder.id, user_id=rep.id, channel=channel, round=0, status=status,
                         attempts=3, next_attempt_at=now + timedelta(hours=1), last_error="HTTP 500",
                         created_at=now, endpoint=endpoint))  # fmt: skip
    db.session.commit()


def test_problems_page_lists_all_paginated_filters_and_retries_the_filtered(
    admin_client, rep_client, make, rep
):
    hook = _endpoint("https://hooks.example.com/a")
    _problem_rows(make, rep, 45, "gave_up", endpoint=f"endpoint:{hook.id}")
    _problem_rows(make, rep, 20, "failed", channel="email", endpoint="smtp")
    _problem_rows(make, rep, 3, "sent")  # not a problem
    assert rep_client.get("/admin/deliveries").status_code == 403
    assert rep_client.post("/admin/deliveries/retry", data={"all": "1"}).status_code == 403
    page1 = admin_client.get("/admin/deliveries").get_data(as_text=True)
    assert "共 65 条" in page1 and "第 1 / 2 页" in page1 and page1.count('name="id"') == 50
    page2 = admin_client.get("/admin/deliveries?page=2").get_data(as_text=True)
    assert page2.count('name="id"') == 15
    assert "第 1 / 2 页" in admin_client.get("/admin/deliveries?page=abc").get_data(as_text=True)  # bad → 1
    email = admin_client.get("/admin/deliveries?channel=email").get_data(as_text=True)
    assert "共 20 条" in email and "gave_up webhook" not in email
    gave_up = admin_client.get(f"/admin/deliveries?status=gave_up&endpoint=endpoint:{hook.id}").get_data(
        as_text=True
    )
    assert "共 45 条" in gave_up
    unknown = admin_client.get("/admin/deliveries?channel=fax&status=lost&endpoint=x").get_data(as_text=True)
    assert "共 65 条" in unknown  # unknown filter values mean "all"
    resp = admin_client.post("/admin/deliveries/retry", data={"all": "1", "channel": "email"},
                             headers={"HX-Request": "true"})  # fmt: skip
    assert resp.status_code == 200 and "没有符合筛选条件的发送问题" in resp.get_data(as_text=True)
    rows = _deliveries()
    assert sum(1 for d in rows if d.channel == "email" and d.status == "pending" and d.attempts == 0) == 20
    assert sum(1 for d in rows if d.status == "gave_up") == 45
    one = next(d for d in rows if d.status == "gave_up")
    assert admin_client.post("/admin/deliveries/retry", data={"id": str(one.id)}).status_code == 302
    assert sum(1 for d in _deliveries() if d.status == "gave_up") == 44
    assert admin_client.post("/admin/deliveries/retry", data={}).status_code == 400
