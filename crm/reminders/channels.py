"""Delivery channels: email (SMTP), DingTalk robot (signed secret), WeCom robot and a generic JSON webhook.

Each sender takes a ``Message`` and raises ``SendError`` with a readable reason on failure — for that one
message (a message that cannot be built never stops the batch). HTTP uses keep-alive connections per host
for the length of a batch (``HttpPool``), only to public addresses (``crm.netguard``), with one generic
error whatever the network said; SMTP one connection per batch. Webhook URLs are validated when saved:
https only, the robot's own host where a robot is chosen, no internal address. Email header values are
single lines (``header_value``); robot markdown escapes every interpolated value (``md_escape``).
"""

from __future__ import annotations

import base64
import contextlib
import email.errors
import email.policy
import hashlib
import hmac
import http.client
import json
import logging
import re
import smtplib
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from flask_babel import gettext as _

from crm import netguard
from crm.inputguard import clean_line, clean_text

log = logging.getLogger(__name__)

DINGTALK_HOST = "oapi.dingtalk.com"
WECOM_HOST = "qyapi.weixin.qq.com"
WEBHOOK_KINDS = ("dingtalk", "wecom", "webhook")
KIND_LABELS = {"dingtalk": "钉钉机器人", "wecom": "企业微信机器人", "webhook": "通用 Webhook (JSON)"}
HTTP_TIMEOUT = 10
USER_AGENT = "gonghai-crm/1 (+reminders)"


class SendError(Exception):
    """A failed send; ``connection`` marks failures to reach the endpoint at all (not an HTTP answer)."""

    def __init__(self, message: str, *, connection: bool = False):
        super().__init__(message)
        self.connection = connection


@dataclass
class Message:
    """What a delivery says, whatever the channel."""

    delivery_id: int
    reminder_id: int
    round: int
    kind: str
    kind_label: str
    title: str
    body: str | None
    due_local: str
    due_iso: str
    customer_id: int | None
    customer_name: str | None
    user_id: int
    user_name: str
    user_email: str | None
    user_phone: str | None
    link: str | None

    @property
    def idempotency_key(self) -> str:
        return f"reminder-{self.reminder_id}-{self.round}"

    def text_lines(self) -> list[str]:
        lines = [self.title]
        if self.customer_name:
            lines.append(_("客户: %(name)s", name=self.customer_name))
        lines.append(_("时间: %(when)s", when=self.due_local))
        if self.body and self.body != self.title:
            lines.append(self.body)
        if self.link:
            lines.append(self.link)
        return lines

    def markdown_lines(self) -> list[str]:
        """``text_lines`` for robots' markdown: every interpolated value escaped (a customer named
        ``[点此登录](https://…)`` stays text), each value on its own line; the app's own link as is."""
        lines = [md_escape(self.title)]
        if self.customer_name:
            lines.append(_("客户: %(name)s", name=md_escape(self.customer_name)))
        lines.append(_("时间: %(when)s", when=md_escape(self.due_local)))
        if self.body and self.body != self.title:
            lines.extend(md_escape(line) for line in clean_text(self.body).split("\n") if line.strip())
        if self.link:
            lines.append(clean_line(self.link).replace(" ", "%20"))
        return lines


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")
_MD_LINE_START = re.compile(r"^(\s*)(-|\d+\.)")


def md_escape(value: object) -> str:
    """One line of text that markdown renders literally: control characters and line breaks removed,
    markdown punctuation backslash-escaped (links, images, emphasis, headings, HTML, tables, lists)."""
    text = _MD_SPECIAL.sub(r"\\\1", clean_line(str(value or "")).strip())
    return _MD_LINE_START.sub(r"\1\\\2", text)


# ---------------------------------------------------------------- URL validation


def unreachable_message() -> str:
    """The one answer an admin gets for a refused address (the reason goes to the log)."""
    return _("无法连接该地址:只能发送到公网地址(内网地址需由管理员在服务器配置 CRM_OUTBOUND_ALLOW 中放行)。")


def validate_webhook_url(
    kind: str, url: str, *, allow_local_http: bool = False, policy: netguard.Policy | None = None
) -> str:
    """A clean URL or ``ValueError`` with a clear Chinese message.

    https only (``allow_local_http`` admits http://127.0.0.1 / localhost for development and tests);
    DingTalk must be ``https://oapi.dingtalk.com/robot/send?access_token=…`` and WeCom
    ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…``. A host that is a loopback, private or
    otherwise non-public address is refused (``netguard``; ``CRM_OUTBOUND_ALLOW`` lists exceptions).
    """
    url = (url or "").strip()
    if kind not in WEBHOOK_KINDS:
        raise ValueError(_("未知的 Webhook 类型。"))
    if not url:
        raise ValueError(_("请填写 Webhook 地址。"))
    if len(url) > 500:
        raise ValueError(_("Webhook 地址不能超过 500 个字符。"))
    if url != clean_line(url) or " " in url:
        raise ValueError(_("Webhook 地址不能包含空格或控制字符。"))
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(_("Webhook 地址格式不正确。")) from exc
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (allow_local_http and parts.scheme == "http" and local):
        raise ValueError(_("Webhook 地址必须以 https:// 开头(明文 http 会泄露提醒内容)。"))
    if not parts.hostname:
        raise ValueError(_("Webhook 地址缺少主机名。"))
    try:
        netguard.check_host(parts.hostname, policy or netguard.current_policy())
    except netguard.Refused as exc:
        log.warning("webhook URL refused: %s", exc)
        raise ValueError(unreachable_message()) from exc
    query = urllib.parse.parse_qs(parts.query)
    if kind == "dingtalk":
        if parts.hostname != DINGTALK_HOST:
            raise ValueError(
                _("钉钉机器人的地址应为 https://%(host)s/robot/send?access_token=…", host=DINGTALK_HOST)
            )
        if not query.get("access_token"):
            raise ValueError(_("钉钉机器人地址缺少 access_token 参数。"))
    if kind == "wecom":
        if parts.hostname != WECOM_HOST:
            raise ValueError(
                _("企业微信机器人的地址应为 https://%(host)s/cgi-bin/webhook/send?key=…", host=WECOM_HOST)
            )
        if not query.get("key"):
            raise ValueError(_("企业微信机器人地址缺少 key 参数。"))
    return url


def dingtalk_signed_url(url: str, secret: str, now_ms: int | None = None) -> str:
    """DingTalk's 加签: ``timestamp`` (ms) and ``sign`` = base64(HMAC-SHA256(secret, "ts\\nsecret"))."""
    timestamp = str(now_ms if now_ms is not None else int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}timestamp={timestamp}&sign={sign}"


# ---------------------------------------------------------------- HTTP with keep-alive


_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process (loading the CA store costs ~0.1 s)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


class _GuardedHTTPConnection(http.client.HTTPConnection):
    """Connects only to an address ``netguard`` allows (resolved once, peer checked)."""

    def __init__(self, host: str, port: int | None, *, timeout: float, policy: netguard.Policy):
        super().__init__(host, port, timeout=timeout)
        self.policy = policy

    def connect(self) -> None:
        self.sock = netguard.connect(self.host, self.port, self.timeout, self.policy)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address ``netguard`` allows; the certificate is verified against the host name."""

    def __init__(self, host: str, port: int | None, *, timeout: float, policy: netguard.Policy):
        super().__init__(host, port, timeout=timeout, context=_ssl_context())
        self.policy = policy

    def connect(self) -> None:
        sock = netguard.connect(self.host, self.port, self.timeout, self.policy)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class HttpPool:
    """Keep-alive HTTP(S) connections per (scheme, host, port) for one batch of deliveries.

    Every connection goes through ``netguard`` with the policy read when the pool is made."""

    def __init__(self, timeout: float = HTTP_TIMEOUT, policy: netguard.Policy | None = None):
        self.timeout = timeout
        self.policy = policy or netguard.current_policy()
        self._conns: dict[tuple, http.client.HTTPConnection] = {}

    def _conn(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        conn = self._conns.get(key)
        if conn is None:
            if scheme not in ("http", "https") or not host:
                raise netguard.Refused(f"unsupported URL {scheme}://{host}")
            cls = _GuardedHTTPSConnection if scheme == "https" else _GuardedHTTPConnection
            conn = cls(host, port, timeout=self.timeout, policy=self.policy)
            conn.connect()
            # http.client writes headers and body separately: without TCP_NODELAY, Nagle's algorithm and
            # delayed ACKs hold every request back by milliseconds on a keep-alive connection.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns[key] = conn
        return conn

    def post_json(self, url: str, payload: dict, headers: dict | None = None) -> tuple[int, bytes]:
        """POST JSON; returns (status, body). Raises ``SendError(connection=True)`` when unreachable.

        A reused connection the server has closed meanwhile is retried once on a fresh connection;
        that failure happens before the server read the request, so it cannot send twice.
        """
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise SendError(_("Webhook 地址格式不正确。"), connection=True) from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        body = json.dumps(payload, ensure_ascii=False).encode()
        hdrs = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT} | (headers or {})
        key = (parts.scheme, parts.hostname, port)
        for attempt in (1, 2):
            reused = key in self._conns
            try:
                conn = self._conn(parts.scheme, parts.hostname, port)
                conn.request("POST", path, body=body, headers=hdrs)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self._drop(key)
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(key)
                if reused and attempt == 1:
                    continue
                raise _unreachable(parts.hostname, port, exc) from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # One answer whatever went wrong (refused, TLS, timeout, non-public address): the
                # difference would let an admin map ports; the details go to the log.
                self._drop(key)
                raise _unreachable(parts.hostname, port, exc) from exc
        raise _unreachable(parts.hostname, port, None)

    def _drop(self, key) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)


def _unreachable(host: str | None, port: int | None, exc: BaseException | None) -> SendError:
    log.warning("outbound connection to %s:%s failed: %r", host, port, exc)
    return SendError(_("无法连接该地址 (%(host)s),请检查地址后重试。", host=host), connection=True)


def _robot_result(status: int, data: bytes, label: str) -> None:
    if status != 200:
        raise SendError(_("%(label)s返回 HTTP %(status)s", label=label, status=status))
    try:
        answer = json.loads(data or b"{}")
    except ValueError as exc:
        raise SendError(_("%(label)s返回了无法解析的内容。", label=label)) from exc
    if answer.get("errcode", 0) != 0:
        raise SendError(
            _(
                "%(label)s返回错误 %(code)s: %(msg)s",
                label=label,
                code=answer.get("errcode"),
                msg=answer.get("errmsg", ""),
            )
        )


def send_dingtalk(pool: HttpPool, url: str, secret: str | None, message: Message) -> None:
    """DingTalk group robot, markdown (values escaped) with an @ of the rep's phone when known."""
    lines = message.markdown_lines()
    text = "\n\n".join([f"#### {lines[0]}"] + lines[1:])
    phone = "".join(ch for ch in message.user_phone or "" if ch.isdigit() or ch == "+")
    at = {"atMobiles": [phone] if phone else [], "isAtAll": False}
    if phone:
        text += f"\n\n@{phone}"
    title = clean_line(message.title).strip()[:60]
    payload = {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at}
    target = dingtalk_signed_url(url, secret) if secret else url
    status, data = pool.post_json(target, payload)
    _robot_result(status, data, _("钉钉"))


def send_wecom(pool: HttpPool, url: str, message: Message) -> None:
    """WeCom group robot, markdown (values escaped)."""
    lines = message.markdown_lines()
    content = f"**{lines[0]}**\n" + "\n".join(f"> {line}" for line in lines[1:])
    content += "\n" + _("提醒对象: %(name)s", name=md_escape(message.user_name))
    status, data = pool.post_json(url, {"msgtype": "markdown", "markdown": {"content": content[:4000]}})
    _robot_result(status, data, _("企业微信"))


def webhook_payload(message: Message) -> dict:
    return {
        "event": "reminder",
        "delivery_id": message.delivery_id,
        "idempotency_key": message.idempotency_key,
        "reminder": {
            "id": message.reminder_id,
            "round": message.round,
            "kind": message.kind,
            "title": message.title,
            "body": message.body,
            "due_at": message.due_iso,
            "link": message.link,
        },
        "customer": {"id": message.customer_id, "name": message.customer_name}
        if message.customer_id
        else None,
        "user": {"id": message.user_id, "name": message.user_name, "email": message.user_email},
    }


def send_webhook(pool: HttpPool, url: str, secret: str | None, message: Message) -> None:
    """Generic JSON webhook: any 2xx is success. ``Idempotency-Key`` lets receivers drop a repeat
    (see dispatch: a worker that dies between sending and recording is retried — at least once);
    with a secret the body is signed (``X-CRM-Signature: sha256=<hex HMAC>``)."""
    payload = webhook_payload(message)
    headers = {
        "X-CRM-Event": "reminder",
        "X-CRM-Delivery": str(message.delivery_id),
        "Idempotency-Key": message.idempotency_key,
    }
    if secret:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers["X-CRM-Signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    status, data = pool.post_json(url, payload, headers)
    if not 200 <= status < 300:
        snippet = data[:200].decode("utf-8", "replace")
        raise SendError(_("Webhook 返回 HTTP %(status)s %(body)s", status=status, body=snippet).strip())


# ---------------------------------------------------------------- email


@dataclass
class SmtpConfig:
    host: str
    port: int
    security: str
    username: str
    password: str
    from_addr: str
    from_name: str
    timeout: int

    @classmethod
    def from_settings(cls, data: dict, password: str) -> SmtpConfig:
        return cls(
            host=data.get("host") or "",
            port=int(data.get("port") or 25),
            security=data.get("security") or "none",
            username=data.get("username") or "",
            password=password or "",
            from_addr=data.get("from_addr") or "",
            from_name=data.get("from_name") or "",
            timeout=int(data.get("timeout") or 10),
        )


class SmtpSession:
    """One SMTP connection for a batch of emails, opened on first use."""

    def __init__(self, config: SmtpConfig):
        self.config = config
        self._smtp: smtplib.SMTP | None = None

    def _open(self) -> smtplib.SMTP:
        cfg = self.config
        if not cfg.host:
            raise SendError(_("尚未配置 SMTP 服务器。"), connection=True)
        try:
            if cfg.security == "ssl":
                smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=_ssl_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
                if cfg.security == "starttls":
                    smtp.starttls(context=_ssl_context())
            if cfg.username:
                smtp.login(cfg.username, cfg.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(
                _("SMTP 认证失败 (%(code)s): %(msg)s", code=exc.smtp_code, msg=_decode(exc.smtp_error)),
                connection=True,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise SendError(
                _("SMTP 服务器不支持所选的加密或认证方式: %(err)s", err=exc), connection=True
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            # One answer for refused, timed out or not speaking SMTP/TLS: the difference would map ports.
            log.warning("SMTP connection to %s:%s failed: %r", cfg.host, cfg.port, exc)
            raise SendError(
                _(
                    "无法连接 SMTP 服务器 %(host)s:%(port)s,请检查地址、端口和加密方式。",
                    host=cfg.host,
                    port=cfg.port,
                ),
                connection=True,
            ) from exc
        return smtp

    def build(self, to_addr: str, subject: str, text: str, message_id: str | None = None) -> EmailMessage:
        """The message with every header value on one clean line (a title carrying ``\\r\\nBcc: …``
        becomes part of the subject, not a header). ``SendError`` for this message alone if it still
        cannot be built (e.g. an address that is not one)."""
        cfg = self.config
        to_addr = header_value(to_addr)
        if not _ADDRESS.fullmatch(to_addr):
            raise SendError(_("收件人地址无效: %(to)s", to=to_addr[:100]))
        try:
            msg = EmailMessage(policy=email.policy.SMTP)
            msg["Subject"] = header_value(subject)[:250]
            from_addr = header_value(cfg.from_addr)
            from_name = header_value(cfg.from_name)
            msg["From"] = formataddr((from_name, from_addr)) if from_name else from_addr
            msg["To"] = to_addr
            msg["Date"] = formatdate(localtime=False)
            if message_id:
                # Stable per reminder round: a repeat after a crash is recognisable as the same message.
                msg["Message-ID"] = header_value(message_id)
            msg.set_content(clean_text(text))
            msg.as_bytes()  # header folding/encoding errors surface here, for this message only
        except (ValueError, TypeError, email.errors.MessageError) as exc:
            log.warning("email to %s cannot be built: %r", to_addr, exc)
            raise SendError(_("邮件内容无法发送: %(err)s", err=type(exc).__name__)) from exc
        return msg

    def send(self, to_addr: str, subject: str, text: str, message_id: str | None = None) -> None:
        msg = self.build(to_addr, subject, text, message_id)
        if self._smtp is None:
            self._smtp = self._open()
        try:
            self._smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendError(_("收件人被拒绝: %(to)s", to=msg["To"])) from exc
        except (smtplib.SMTPNotSupportedError, UnicodeError) as exc:
            # This message needs what the server lacks (e.g. SMTPUTF8 for a non-ASCII address).
            raise SendError(_("SMTP 服务器无法发送这封邮件: %(err)s", err=exc)) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise SendError(_("发送邮件失败: %(err)s", err=exc), connection=True) from exc

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None


_ADDRESS = re.compile(r"[^@\s<>,;\"()\[\]\\]+@[^@\s<>,;\"()\[\]\\]+")


def header_value(value: object) -> str:
    """A header value on one line: control characters (CR, LF, NUL, …) become spaces, runs collapse."""
    return " ".join(clean_line(str(value or "")).split())


def _decode(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def send_email(smtp: SmtpSession, message: Message, host_hint: str = "gonghai-crm") -> None:
    if not message.user_email:
        raise SendError(_("该用户没有邮箱地址。"))
    smtp.send(
        message.user_email,
        f"[{_('公海 CRM')}] {message.title}",
        "\n".join(message.text_lines()),
        message_id=f"<{message.idempotency_key}@{host_hint}>",
    )


def try_smtp(config: SmtpConfig, to_addr: str) -> None:
    """Send one test email now; ``SendError`` says what went wrong (shown on the settings page)."""
    session = SmtpSession(config)
    try:
        session.send(
            to_addr,
            _("公海 CRM 测试邮件"),
            _("这是一封测试邮件:邮件提醒已配置成功。"),
        )
    finally:
        session.close()


def try_webhook(kind: str, url: str, secret: str | None, user_name: str, now_iso: str) -> None:
    """Send one test message to a robot or webhook now; ``SendError`` on failure."""
    message = Message(
        delivery_id=0, reminder_id=0, round=0, kind="system", kind_label=_("系统通知"),
        title=_("公海 CRM 测试消息"), body=_("Webhook 已配置成功,跟进提醒会发到这里。"),
        due_local=now_iso, due_iso=now_iso, customer_id=None, customer_name=None, user_id=0,
        user_name=user_name, user_email=None, user_phone=None, link=None,
    )  # fmt: skip
    pool = HttpPool()
    try:
        if kind == "dingtalk":
            send_dingtalk(pool, url, secret, message)
        elif kind == "wecom":
            send_wecom(pool, url, message)
        else:
            send_webhook(pool, url, secret, message)
    finally:
        pool.close()
