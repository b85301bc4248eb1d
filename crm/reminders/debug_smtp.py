"""A tiny SMTP sink for development: accepts every message and prints it (no mail leaves the machine).

    flask --app app crm debug-smtp --port 1025

then in 管理 → 通知渠道 set SMTP server ``127.0.0.1``, port ``1025``, encryption ``none``, no user name,
and press 发送测试邮件. (Python's old ``smtpd`` module is gone from 3.12, hence this one.) Tests use
``DebugSmtpServer`` directly to look at what was sent.
"""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from collections.abc import Callable


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def _reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self) -> None:
        server: DebugSmtpServer = self.server  # type: ignore[assignment]
        self._reply("220 gonghai-crm debug SMTP ready")
        sender, recipients = None, []
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250-gonghai-crm" if verb == "EHLO" else "250 gonghai-crm")
                if verb == "EHLO":
                    self._reply("250 8BITMIME")
            elif line.upper().startswith("MAIL FROM:"):
                sender, recipients = line[10:].strip().strip("<>"), []
                self._reply("250 OK")
            elif line.upper().startswith("RCPT TO:"):
                address = line[8:].strip().strip("<>")
                if server.refuse and address in server.refuse:
                    self._reply("550 No such user")
                    continue
                recipients.append(address)
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                chunks = []
                while True:
                    data = self.rfile.readline(1 << 20)
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    chunks.append(data[1:] if data.startswith(b"..") else data)
                message = email.message_from_bytes(b"".join(chunks), policy=email.policy.default)
                server.received(sender, recipients, message)
                self._reply("250 OK: queued")
            elif verb == "RSET":
                sender, recipients = None, []
                self._reply("250 OK")
            elif verb == "NOOP":
                self._reply("250 OK")
            elif verb == "QUIT":
                self._reply("221 Bye")
                return
            else:
                self._reply("502 Command not implemented")


class DebugSmtpServer(socketserver.ThreadingTCPServer):
    """``DebugSmtpServer(("127.0.0.1", 0))``; ``.start()`` serves in a thread; ``.messages`` holds mail."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], on_message: Callable | None = None, refuse=()):
        super().__init__(address, _Handler)
        self.messages: list[tuple[str | None, list[str], email.message.EmailMessage]] = []
        self.on_message = on_message
        self.refuse = set(refuse)
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def received(self, sender, recipients, message) -> None:
        with self._lock:
            self.messages.append((sender, recipients, message))
        if self.on_message is not None:
            self.on_message(sender, recipients, message)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def print_message(sender, recipients, message) -> None:
    body = message.get_body(preferencelist=("plain",))
    print("-" * 60)
    print(f"From: {sender}  To: {', '.join(recipients)}")
    print(f"Subject: {message['Subject']}")
    print(body.get_content() if body is not None else "")
