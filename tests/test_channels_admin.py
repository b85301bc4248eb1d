"""Admin settings of reminders and channels: webhook URL rules, the SMTP test-send showing the error,
settings validation, and per-user notification settings on the profile page."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm import clock
from crm.extensions import db
from crm.models import Setting, SettingsAudit, WebhookEndpoint
from crm.netguard import Policy
from crm.reminders.channels import dingtalk_signed_url, validate_webhook_url
from crm.reminders.debug_smtp import DebugSmtpServer
from crm.settings import store


@pytest.mark.parametrize(
    ("kind", "url", "message"),
    [
        ("webhook", "http://hooks.example.com/x", "必须以 https:// 开头"),
        ("webhook", "ftp://hooks.example.com/x", "必须以 https:// 开头"),
        ("webhook", "", "请填写 Webhook 地址"),
        ("dingtalk", "https://evil.example.com/robot/send?access_token=1", "oapi.dingtalk.com"),
        ("dingtalk", "https://oapi.dingtalk.com/robot/send", "缺少 access_token"),
        ("wecom", "https://oapi.dingtalk.com/cgi-bin/webhook/send?key=1", "qyapi.weixin.qq.com"),
        ("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send", "缺少 key"),
        ("dingtalk", "http://oapi.dingtalk.com/robot/send?access_token=1", "https://"),
    ],
)
def test_webhook_urls_are_checked_with_clear_messages(kind, url, message):
    with pytest.raises(ValueError, match=message):
        validate_webhook_url(kind, url)


def test_valid_robot_urls_pass():
    assert validate_webhook_url(
        "dingtalk", " https://oapi.dingtalk.com/robot/send?access_token=abc "
    ).startswith("https://oapi.dingtalk.com/")
    assert validate_webhook_url("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k")
    assert validate_webhook_url("webhook", "https://hooks.example.com/crm")
    with pytest.raises(ValueError):
        validate_webhook_url("webhook", "http://127.0.0.1:8080/hook")
    loopback = Policy.parse("127.0.0.0/8")  # the suite's setting (conftest); the default refuses loopback
    assert validate_webhook_url(
        "webhook", "http://127.0.0.1:8080/hook", allow_local_http=True, policy=loopback
    )


def test_dingtalk_sign_matches_the_documented_algorithm():
    # Reference values computed from DingTalk's documented recipe: base64(HMAC-SHA256(secret, "ts\nsecret")).
    url = dingtalk_signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=x", "SECabc", now_ms=1700000000000
    )
    assert url.startswith("https://oapi.dingtalk.com/robot/send?access_token=x&timestamp=1700000000000&sign=")
    import base64
    import hashlib
    import hmac
    import urllib.parse

    digest = hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()
    assert url.endswith("sign=" + urllib.parse.quote_plus(base64.b64encode(digest)))


def test_admin_adds_a_robot_and_bad_urls_come_back_in_place(admin_client):
    bad = admin_client.post(
        "/admin/channels/webhooks",
        data={"wh-kind": "dingtalk", "wh-name": "销售群", "wh-url": "https://example.com/robot/send?access_token=1",
              "wh-team_id": "", "wh-enabled": "y"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert "oapi.dingtalk.com" in html and "销售群" in html  # message, and what was typed is kept
    assert db.session.scalar(select(WebhookEndpoint)) is None
    ok = admin_client.post(
        "/admin/channels/webhooks",
        data={"wh-kind": "dingtalk", "wh-name": "销售群", "wh-secret": "SECsecret1",
              "wh-url": "https://oapi.dingtalk.com/robot/send?access_token=abcdef123", "wh-team_id": "",
              "wh-enabled": "y"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert ok.status_code == 200
    ep = db.session.scalar(select(WebhookEndpoint))
    assert ep.kind == "dingtalk" and ep.secret == "SECsecret1" and ep.team_id is None
    html = ok.get_data(as_text=True)
    assert "abcdef123" not in html and "access_token=abcd…" in html  # the token is not shown again
    audit = db.session.scalar(select(SettingsAudit).where(SettingsAudit.section == "webhooks"))
    assert "SECsecret1" not in str(audit.after) and "abcdef123" not in str(audit.after)
    # A DingTalk secret must look like one.
    wrong = admin_client.post(
        f"/admin/channels/webhooks/{ep.id}",
        data={f"wh{ep.id}-kind": "dingtalk", f"wh{ep.id}-name": "销售群", f"wh{ep.id}-secret": "abc",
              f"wh{ep.id}-url": ep.url, f"wh{ep.id}-team_id": "", f"wh{ep.id}-enabled": "y"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert wrong.status_code == 422 and "SEC 开头" in wrong.get_data(as_text=True)


def test_webhook_test_send_shows_the_error(admin_client):
    ep = WebhookEndpoint(kind="webhook", name="本机", url="https://127.0.0.1:9/hook", enabled=True, extra={},
                         created_at=clock.now())  # fmt: skip
    db.session.add(ep)
    db.session.commit()
    resp = admin_client.post(f"/admin/channels/webhooks/{ep.id}/test", headers={"HX-Request": "true"})
    assert resp.status_code == 200
    assert "测试发送失败" in resp.get_data(as_text=True) and "127.0.0.1" in resp.get_data(as_text=True)


def _smtp_form(**over):
    data = {"smtp-host": "127.0.0.1", "smtp-port": "1", "smtp-security": "none", "smtp-from_addr": "crm@example.com",
            "smtp-from_name": "公海 CRM", "smtp-timeout": "3", "smtp-test_to": "me@example.com", "smtp-enabled": "y"}  # fmt: skip
    data.update(over)
    return data


def test_smtp_test_send_shows_the_error_and_changes_nothing(admin_client):
    resp = admin_client.post(
        "/admin/channels/smtp", data=_smtp_form(action="test"), headers={"HX-Request": "true"}
    )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "测试发送失败" in html and "127.0.0.1:1" in html
    assert 'value="crm@example.com"' in html  # nothing lost
    assert store.get(db.session, "smtp")["host"] == ""  # a test does not save


def test_smtp_test_send_reaches_a_local_smtp_server_then_save(admin_client):
    server = DebugSmtpServer(("127.0.0.1", 0))
    server.start()
    try:
        resp = admin_client.post(
            "/admin/channels/smtp", data=_smtp_form(action="test", **{"smtp-port": str(server.port)}),
            headers={"HX-Request": "true"},
        )  # fmt: skip
    finally:
        server.stop()
    assert resp.status_code == 200 and "测试邮件已发送" in resp.get_data(as_text=True)
    assert server.messages[0][1] == ["me@example.com"]
    saved = admin_client.post(
        "/admin/channels/smtp", data=_smtp_form(action="save", **{"smtp-password": "p@ss"}),
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert saved.status_code == 200
    assert store.get(db.session, "smtp")["host"] == "127.0.0.1"
    assert "password" not in store.get(db.session, "smtp")
    assert db.session.get(Setting, "smtp_secret").data == {"password": "p@ss"}


def test_smtp_settings_validation(admin_client):
    resp = admin_client.post(
        "/admin/channels/smtp", data=_smtp_form(action="save", **{"smtp-host": "", "smtp-port": "99999"}),
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert resp.status_code == 422
    assert "需在 1–65535 之间" in resp.get_data(as_text=True)


def test_settings_sections_validate_and_save(admin_client, api, make, admin):
    bad = admin_client.post(
        "/admin/reminders",
        data={"section": "frequency_caps", "frequency_caps-per_day": "5", "frequency_caps-per_week": "2",
              "frequency_caps-mode": "block"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert bad.status_code == 422 and "每周上限不能小于每日上限" in bad.get_data(as_text=True)
    ok = admin_client.post(
        "/admin/reminders",
        data={"section": "cadence", "cadence-grade_a": "5", "cadence-grade_b": "10", "cadence-grade_c": "20",
              "cadence-new_customer_days": "2", "cadence-stall_days": "10", "cadence-default_next_days": "2",
              "cadence-default_hour": "9", "cadence-overdue_escalation_hours": "12"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert ok.status_code == 200
    cadence = store.get(db.session, "cadence")
    assert cadence["grade_days"] == {"A": 5, "B": 10, "C": 20} and cadence["default_hour"] == 9
    # The same sections through the generic settings API.
    token = make.token(admin, "read write admin")
    assert api(token).get("/api/v1/settings/frequency_caps").json["data"]["mode"] == "warn"
    resp = api(token).put("/api/v1/settings/frequency_caps", json={"mode": "sometimes"})
    assert resp.status_code == 422
    assert api(token).get("/api/v1/settings/smtp").json["data"].get("password") is None


def test_profile_notification_settings(rep_client, rep):
    page = rep_client.get("/profile").get_data(as_text=True)
    assert "提醒通知" in page and "日历订阅" in page
    bad = rep_client.post(
        "/profile/notifications", data={"np-channels": ["in_app", "email"], "np-quiet_start": "25:00"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert bad.status_code == 422 and "HH:MM" in bad.get_data(as_text=True)
    half = rep_client.post(
        "/profile/notifications", data={"np-quiet_start": "22:00"}, headers={"HX-Request": "true"}
    )
    assert half.status_code == 422 and "同时填写" in half.get_data(as_text=True)
    ok = rep_client.post(
        "/profile/notifications",
        data={"np-channels": ["email", "dingtalk"], "np-quiet_start": "22:00", "np-quiet_end": "08:00"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert ok.status_code == 200
    db.session.refresh(rep)
    assert rep.notify_prefs == {"channels": ["in_app", "email", "dingtalk"], "quiet_start": "22:00",
                                "quiet_end": "08:00"}  # fmt: skip
