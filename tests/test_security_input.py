"""Regression tests of issue 18 (part B), each replaying the attack on real requests: masked phones
recovered by guessing, header injection in reminder email, SSRF from webhook settings, what a leads token
learns and lifts, markdown in robot messages, an unbounded ``utm``, 500s on out-of-range input, and
control characters in single-line text."""

from __future__ import annotations

import json
import re
import socket
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm import clock, netguard
from crm.extensions import db
from crm.models import BehaviorEvent, Customer, RateLimitHit, Reminder, WebhookEndpoint
from crm.reminders import channels, dispatch
from crm.reminders.debug_smtp import DebugSmtpServer
from crm.settings import store
from tests.receiver import Receiver

MASKED = "158****9378"


# ---------------------------------------------------------------- 3. masked phones and guessing


@pytest.fixture
def masked_pool(make, rep, manager):
    pool = make.pool("华东公海", members=[rep], admins=[manager], mask_contacts=True)
    make.customer(pool, name="星河科技", phone="15800009378", phone_key="+8615800009378")
    return pool


def _guesses(n: int, start: int = 0) -> list[str]:
    return [f"158{i:04d}9378" for i in range(start, start + n)]


def test_guessing_a_masked_phone_on_the_board_runs_out_of_daily_budget(app, rep_client, rep, masked_pool):
    app.config["MASKED_PHONE_SEARCHES_PER_DAY"] = 5
    for guess in _guesses(5, start=1):  # wrong numbers: the board answers, with no row
        resp = rep_client.get(f"/pools/{masked_pool.id}?q={guess}")
        assert resp.status_code == 200 and "星河科技" not in resp.text
    resp = rep_client.get(f"/pools/{masked_pool.id}?q=15800009378")  # the right one, too late
    assert resp.status_code == 429
    assert "星河科技" not in resp.text and "次数已用完" in resp.text
    # Every try is on the ledger: who, which pool, what was searched.
    hits = db.session.scalars(select(RateLimitHit).where(RateLimitHit.key == f"masked-phone-search:{rep.id}"))
    details = [h.detail for h in hits]
    assert len(details) == 6 and all(f"pool={masked_pool.id}" in d for d in details)
    assert "q=15800009378" in details[-1]


def test_the_api_shares_the_budget_and_says_so_in_json(app, api, make, rep, rep_client, masked_pool):
    app.config["MASKED_PHONE_SEARCHES_PER_DAY"] = 3
    client = api(make.token(rep, "read"))
    for guess in _guesses(2, start=1):
        assert rep_client.get(f"/pools/{masked_pool.id}?q={guess}").status_code == 200
    assert client.get(f"/api/v1/pools/{masked_pool.id}/customers?q=15800000003").status_code == 200
    resp = client.get(f"/api/v1/pools/{masked_pool.id}/customers?q=15800009378")
    assert resp.status_code == 429 and resp.json["error"] == "search_budget_spent"
    assert "次数已用完" in resp.json["message"] and "items" not in resp.json


def test_name_searches_and_pool_admins_are_not_counted(app, rep_client, manager_client, masked_pool):
    app.config["MASKED_PHONE_SEARCHES_PER_DAY"] = 2
    for _ in range(4):
        assert rep_client.get(f"/pools/{masked_pool.id}?q=星河").status_code == 200
    for guess in _guesses(4, start=1) + ["15800009378"]:
        assert manager_client.get(f"/pools/{masked_pool.id}?q={guess}").status_code == 200
    assert "星河科技" in manager_client.get(f"/pools/{masked_pool.id}?q=15800009378").text
    assert db.session.scalar(select(func.count()).select_from(RateLimitHit)) == 0


def test_recovering_one_number_takes_days(app, masked_pool):
    """10,000 candidates for ``158****9378`` at the default budget: more than a year of tries."""
    from crm.pool.board import MASKED_PHONE_SEARCHES_PER_DAY

    assert app.config.get("MASKED_PHONE_SEARCHES_PER_DAY", MASKED_PHONE_SEARCHES_PER_DAY) <= 20
    assert 10_000 / 2 / MASKED_PHONE_SEARCHES_PER_DAY >= 100  # expected days to hit it


# ---------------------------------------------------------------- 5. header injection in email


POISON = "poison\r\nBcc: victim@example.com"


def test_a_title_with_crlf_sends_one_clean_subject_and_no_extra_header(make, rep, admin):
    rep.notify_prefs = {"channels": ["in_app", "email"]}
    server = DebugSmtpServer(("127.0.0.1", 0))
    server.start()
    try:
        store.put(db.session, "smtp", {"enabled": True, "host": "127.0.0.1", "port": server.port,
                                       "from_addr": "crm@example.com"}, admin, clock.now())  # fmt: skip
        db.session.commit()
        now = clock.now()
        with clock.frozen(now):
            make.reminder(rep, due_at=now - timedelta(minutes=1), title=POISON)  # legacy row: raw CR/LF
            make.reminder(rep, due_at=now - timedelta(minutes=1), title="回访星河科技")
            dispatch.dispatch_pass(db.session)
    finally:
        server.stop()
    assert len(server.messages) == 2
    subjects = sorted(str(m["Subject"]) for _s, _r, m in server.messages)
    assert any("poison Bcc: victim@example.com" in s for s in subjects)
    for _sender, recipients, message in server.messages:
        assert recipients == [rep.email]
        assert message["Bcc"] is None and "\n" not in str(message["Subject"])
    statuses = db.session.scalars(select(Reminder.id)).all()
    assert len(statuses) == 2
    from crm.models import ReminderDelivery

    emails = db.session.scalars(select(ReminderDelivery).where(ReminderDelivery.channel == "email")).all()
    assert {d.status for d in emails} == {"sent"}


def test_a_message_that_cannot_be_built_is_its_own_send_error():
    session = channels.SmtpSession(
        channels.SmtpConfig("127.0.0.1", 9, "none", "", "", "crm@example.com", "", 1)
    )
    with pytest.raises(channels.SendError) as refused:
        session.send("victim@example.com\r\nBcc: other@example.com", "hi", "text")
    assert refused.value.connection is False  # the batch goes on; only this delivery fails
    message = session.build("rep@example.com", POISON, "第一行\r\n第二行\x00")
    assert message["Subject"] == "poison Bcc: victim@example.com" and message["Bcc"] is None
    assert "\x00" not in message.get_content()


def test_titles_from_the_api_lose_their_line_breaks(api, make, rep):
    due = (clock.now() + timedelta(days=1)).isoformat()
    resp = api(make.token(rep)).post("/api/v1/reminders", json={"title": POISON + "\x00", "due_at": due})
    assert resp.status_code == 201, resp.json
    assert db.session.get(Reminder, resp.json["id"]).title == "poison Bcc: victim@example.com"


# ---------------------------------------------------------------- 6. SSRF from webhook settings


@pytest.fixture
def strict(app):
    """The production default: no allow-list (the suite's conftest allows loopback)."""
    app.config["CRM_OUTBOUND_ALLOW"] = ""
    return app


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/hook",
        "https://[::1]/hook",
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://0177.0.0.1/hook",
        "https://127.1/hook",
        "https://localhost/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://192.168.1.1/hook",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
    ],
)
def test_webhook_urls_to_internal_addresses_are_refused(strict, admin_client, url):
    resp = admin_client.post("/admin/channels/webhooks", data={"wh-kind": "webhook", "wh-name": "内网", "wh-url": url,
                                                               "wh-team_id": "", "wh-enabled": "y"})  # fmt: skip
    assert resp.status_code == 422
    assert "无法连接该地址" in resp.text
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def _stored_endpoint(url: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        kind="webhook", name="旧地址", url=url, enabled=True, extra={}, created_at=clock.now()
    )
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_test_send_does_not_connect_to_internal_addresses(strict, admin_client, host):
    with Receiver() as receiver:
        port = receiver.server_address[1]
        endpoint = _stored_endpoint(f"http://{host}:{port}/hook")  # saved before the rule, or rebound DNS
        resp = admin_client.post(
            f"/admin/channels/webhooks/{endpoint.id}/test", headers={"HX-Request": "true"}
        )
        assert resp.status_code == 200 and "无法连接该地址" in resp.text
        assert receiver.requests == 0


def test_dispatch_does_not_deliver_to_internal_addresses(strict, make, rep):
    rep.notify_prefs = {"channels": ["in_app", "webhook"]}
    with Receiver() as receiver:
        _stored_endpoint(receiver.url + "/hook")
        make.reminder(rep, due_at=clock.now() - timedelta(minutes=1))
        dispatch.dispatch_pass(db.session)
        assert receiver.requests == 0
    from crm.models import ReminderDelivery

    [row] = db.session.scalars(select(ReminderDelivery).where(ReminderDelivery.channel == "webhook")).all()
    assert row.status in ("failed", "gave_up") and "无法连接该地址" in row.last_error


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_do_not_tell_a_closed_port_from_an_open_one(admin_client):
    """Even where loopback is allowed (the suite's setting), the admin sees one generic answer."""
    with Receiver() as receiver:
        open_ = _stored_endpoint(
            f"https://127.0.0.1:{receiver.server_address[1]}/hook"
        )  # plain HTTP: TLS fails
        closed = _stored_endpoint(f"https://127.0.0.1:{_closed_port()}/hook")
        answers = []
        for endpoint in (open_, closed):
            resp = admin_client.post(
                f"/admin/channels/webhooks/{endpoint.id}/test", headers={"HX-Request": "true"}
            )
            assert "无法连接该地址" in resp.text
            for leak in ("refused", "WRONG_VERSION", "SSL", "Errno", "timed out"):
                assert leak not in resp.text
            answers.append(re.search(r"测试发送失败[^<]*", resp.text).group(0))
    assert answers[0] == answers[1]


def test_an_allow_list_lets_a_local_relay_through(app, admin_client):
    app.config["CRM_OUTBOUND_ALLOW"] = "127.0.0.0/8"
    with Receiver() as receiver:
        endpoint = _stored_endpoint(receiver.url + "/hook")
        resp = admin_client.post(
            f"/admin/channels/webhooks/{endpoint.id}/test", headers={"HX-Request": "true"}
        )
        assert "测试消息已发送" in resp.text and receiver.requests == 1


def test_netguard_reads_every_spelling_of_an_address():
    spellings = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]", "::ffff:127.0.0.1"]
    for host in spellings:
        ip = netguard.literal_address(host)
        assert ip is not None and not netguard.is_public(ip), host
    assert netguard.literal_address("hooks.example.com") is None
    assert netguard.is_public(netguard.literal_address("8.8.8.8"))
    policy = netguard.Policy.parse("10.1.0.0/16, relay.corp.local")
    assert policy.allows_address(netguard.literal_address("10.1.2.3"))
    assert not policy.allows_address(netguard.literal_address("10.2.0.1"))
    assert policy.allows_host("Relay.Corp.Local.")
    with pytest.raises(netguard.Refused):
        netguard.connect("localhost", 9, 1, netguard.Policy())


# ---------------------------------------------------------------- 8. what a leads token learns and lifts


LEAD = {"name": "深圳云帆科技", "contact_name": "李雷", "phone": "13800138000"}


def test_a_leads_token_learns_no_owner_of_a_duplicate(api, make, rep, manager):
    pool = make.pool("新线索池", kind="lead", members=[rep])
    other = make.customer(pool, owner=manager, name="深圳云帆科技", phone="13800138000",
                          phone_key="+8613800138000")  # fmt: skip
    resp = api(make.token(rep, "leads")).post("/api/v1/leads", json=LEAD)
    assert resp.status_code == 200 and resp.json == {"status": "duplicate"}
    assert str(other.id) not in resp.text or resp.json.get("id") is None
    created = api(make.token(rep, "leads")).post("/api/v1/leads", json=LEAD | {"phone": "13900139000",
                                                                                "name": "新公司"})  # fmt: skip
    assert created.status_code == 201 and set(created.json) == {"id", "status"}


def test_events_on_customers_the_token_cannot_see_are_404_and_lift_nothing(api, make, rep):
    other_team = make.pool("华南区域池")
    theirs = make.customer(other_team, name="别家客户", score=0, grade="C")
    client = api(make.token(rep, "leads"))
    for kind in ("download", "form_submit", "ad_click"):
        resp = client.post("/api/v1/events", json={"customer_id": theirs.id, "type": kind})
        assert resp.status_code == 404
    by_phone = client.post("/api/v1/events", json={"phone": theirs.phone, "type": "download"})
    assert by_phone.status_code == 404
    db.session.refresh(theirs)
    assert theirs.score == 0
    assert db.session.scalar(select(func.count()).select_from(BehaviorEvent)) == 0


def test_repeated_events_count_once_per_window_and_tokens_are_rate_limited(app, api, make, rep):
    pool = make.pool("我的池", members=[rep])
    mine = make.customer(pool, name="我的客户")
    client = api(make.token(rep, "leads"))
    first = client.post("/api/v1/events", json={"customer_id": mine.id, "type": "download"})
    assert first.status_code == 201
    for _ in range(3):
        again = client.post("/api/v1/events", json={"customer_id": mine.id, "type": "download"})
        assert again.status_code == 200 and again.json["duplicate"] is True
    backdated = (clock.now() - timedelta(seconds=30)).isoformat()
    resp = client.post("/api/v1/events", json={"customer_id": mine.id, "type": "download", "at": backdated})
    assert resp.status_code == 200 and resp.json["duplicate"] is True
    assert db.session.scalar(select(func.count()).select_from(BehaviorEvent)) == 1
    app.config["EVENTS_PER_MINUTE"] = 6  # 5 used above
    assert (
        client.post("/api/v1/events", json={"customer_id": mine.id, "type": "page_view"}).status_code == 201
    )
    resp = client.post("/api/v1/events", json={"customer_id": mine.id, "type": "email_open"})
    assert resp.status_code == 429 and "过于频繁" in resp.json["message"]


# ---------------------------------------------------------------- 9. markdown in robot messages


def _message(name: str) -> channels.Message:
    return channels.Message(
        delivery_id=1, reminder_id=1, round=0, kind="custom", kind_label="自定义", title=f"回访 {name}",
        body="- 第一行\n[链接](https://evil.example)", due_local="2026-03-10 10:00", due_iso="", customer_id=1,
        customer_name=name, user_id=1, user_name="小王*", user_email=None, user_phone="138 0013 8000",
        link="https://crm.example.com/customers/1",
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["dingtalk", "wecom"])
def test_customer_names_cannot_add_links_to_robot_messages(kind):
    name = "[点此重新登录](https://evil.example/login)\r\n# 紧急"
    with Receiver(reply={"errcode": 0}) as receiver:
        pool = channels.HttpPool(policy=netguard.Policy.parse("127.0.0.0/8"))
        try:
            if kind == "dingtalk":
                channels.send_dingtalk(pool, receiver.url + "/robot", None, _message(name))
            else:
                channels.send_wecom(pool, receiver.url + "/robot", _message(name))
        finally:
            pool.close()
        [got] = receiver.received
    markdown = got["json"]["markdown"]
    text = markdown.get("text") or markdown.get("content")
    assert "](https://evil.example" not in text and "[点此重新登录]" not in text
    assert r"\[点此重新登录\]\(https://evil.example/login\)" in text
    assert "\n# 紧急" not in text and "\n- 第一行" not in text
    assert "https://crm.example.com/customers/1" in text  # the app's own link stays usable


# ---------------------------------------------------------------- 10. utm


@pytest.fixture
def lead_client(api, make, rep):
    make.pool("新线索池", kind="lead", members=[rep])
    return api(make.token(rep, "write"))


@pytest.mark.parametrize(
    "utm",
    [
        {f"k{i}": "v" * 100 for i in range(20_000)},
        {f"k{i}": "v" for i in range(21)},
        {"utm_source": {"nested": "object"}},
        {"utm_source": ["a", "b"]},
        {"utm_source": "x" * 201},
        {"k" * 41: "v"},
        {f"k{i}": "v" * 150 for i in range(15)},
    ],
)
def test_an_unbounded_utm_is_refused_with_a_clear_message(lead_client, utm):
    resp = lead_client.post("/api/v1/leads", json=LEAD | {"utm": utm})
    assert resp.status_code in (413, 422)
    assert resp.json["message"] and ("utm" in resp.json["message"] or resp.status_code == 413)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_reasonable_utm_is_kept(lead_client):
    utm = {f"utm_k{i}": f"值{i}" for i in range(20)} | {"utm_id": 42}
    utm.pop("utm_k19")
    resp = lead_client.post("/api/v1/leads", json=LEAD | {"utm": utm})
    assert resp.status_code == 201
    assert db.session.get(Customer, resp.json["id"]).utm["utm_id"] == "42"


# ---------------------------------------------------------------- 11. 500s on out-of-range input


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "path",
    [f"/customers/{HUGE}", "/customers/2147483648", f"/pools/{HUGE}", f"/customers/{HUGE}/followup"],
)
def test_ids_beyond_the_database_range_in_paths_are_404(rep_client, path):
    assert rep_client.get(path).status_code == 404


def test_api_ids_beyond_the_database_range_are_404_or_422(api, make, rep):
    client = api(make.token(rep))
    assert client.get(f"/api/v1/pools/{HUGE}/customers").status_code == 404
    assert client.get(f"/api/v1/customers/{HUGE}").status_code == 404
    due = (clock.now() + timedelta(days=1)).isoformat()
    for customer_id in (int(HUGE), 2**31, -(2**63)):
        resp = client.post(
            "/api/v1/reminders", json={"title": "x", "due_at": due, "customer_id": customer_id}
        )
        assert resp.status_code == 422 and resp.json["error"] == "invalid"
    assert client.get(f"/api/v1/reminders?customer_id={HUGE}").status_code < 500


@pytest.mark.parametrize("year", ["-1", "0", "99999", "abc", "1999", "2101"])
def test_years_out_of_range_are_400(admin_client, api, make, admin, year):
    assert admin_client.get(f"/recycle/holidays?year={year}").status_code == 400
    resp = api(make.token(admin, "read write admin")).get(f"/api/v1/settings/holidays?year={year}")
    assert resp.status_code == 400 and "年份" in resp.json["message"]


def test_deeply_nested_json_is_400_and_huge_json_is_413(api, make, rep):
    client = api(make.token(rep))
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = client.post("/api/v1/reminders", data=deep, content_type="application/json")
    assert resp.status_code == 400 and "嵌套" in resp.json["message"]
    nested_in_string = json.dumps({"title": "[" * 5000, "due_at": "x"})  # brackets inside strings are text
    assert (
        client.post("/api/v1/reminders", data=nested_in_string, content_type="application/json").status_code
        == 422
    )
    big = json.dumps({"title": "x" * (2 * 1024 * 1024)})
    resp = client.post("/api/v1/reminders", data=big, content_type="application/json")
    assert resp.status_code == 413 and resp.json["error"] == "too_large"


# ---------------------------------------------------------------- input: control characters


def test_single_line_fields_lose_control_characters_on_every_path(
    app, rep_client, manager_client, make, rep, manager
):
    pool = make.pool("一组公海", members=[rep])
    customer = make.customer(pool, owner=rep, name="星河科技")
    resp = rep_client.post(
        f"/customers/{customer.id}/edit",
        data={"name": "星河\r\nBcc: x\x00科技", "kind": "company", "contact_name": "王\x1b总",
              "phone": customer.phone, "region": "华东\u2028"},
    )  # fmt: skip
    assert resp.status_code in (200, 302, 303), resp.text[:300]
    db.session.refresh(customer)
    assert customer.name == "星河 Bcc: x科技" and customer.contact_name == "王总"


def test_multi_line_text_keeps_line_breaks_but_not_nul():
    from crm.inputguard import clean_line, clean_text

    assert clean_text("第一行\r\n第二行\x00\t缩进\x85") == "第一行\n第二行\t缩进"
    assert clean_line("a\r\nb\tc\x00d\x9f") == "a b cd"


def test_the_smtp_test_send_does_not_tell_a_closed_port_from_another_service(admin_client):
    """SMTP relays may be on the intranet (not refused), but the answer does not map ports either."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        conn, _addr = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")  # another service's banner
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    answers = []
    for port in (listener.getsockname()[1], _closed_port()):
        resp = admin_client.post("/admin/channels/smtp", headers={"HX-Request": "true"}, data={
            "smtp-host": "127.0.0.1", "smtp-port": str(port), "smtp-security": "none",
            "smtp-from_addr": "crm@example.com", "smtp-timeout": "2", "smtp-test_to": "me@example.com",
            "smtp-enabled": "y", "action": "test"})  # fmt: skip
        assert resp.status_code == 422
        for leak in ("refused", "Errno", "SSH", "timed out", "Connection"):
            assert leak not in resp.text
        answers.append(re.search(r"无法连接 SMTP 服务器[^<]*", resp.text).group(0).replace(str(port), "PORT"))
    thread.join(5)
    listener.close()
    assert answers[0] == answers[1]
