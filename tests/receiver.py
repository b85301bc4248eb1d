"""A real HTTP server on 127.0.0.1 that records webhook deliveries (tests of the reminder dispatch).

``Receiver(fail_first=3)`` answers 500 to the first three requests; ``reply`` sets the JSON body of
successful answers (robots answer ``{"errcode": 0}``); ``delay`` (seconds) is how long each answer takes (the
fault tests stretch a dispatch over time with it). HTTP/1.1 with keep-alive, like real endpoints.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):  # noqa: N802 (http.server naming)
        server: Receiver = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if server.delay:
            time.sleep(server.delay)
        with server.lock:
            server.requests += 1
            number = server.requests
        ok = number > server.fail_first
        if ok:
            payload = json.loads(body or b"{}")
            url = urlsplit(self.path)
            with server.lock:
                server.received.append(
                    {
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "headers": dict(self.headers),
                        "json": payload,
                    }
                )
                key = self.headers.get("Idempotency-Key") or json.dumps(payload, sort_keys=True)
                server.keys[key] += 1
            status, reply = 200, json.dumps(server.reply).encode()
        else:
            status, reply = 500, b'{"error": "temporarily down"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16 senders connecting at once must not overflow the listen backlog

    def __init__(self, fail_first: int = 0, reply: dict | None = None, delay: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first = fail_first
        self.delay = delay
        self.reply = reply if reply is not None else {"ok": True}
        self.lock = threading.Lock()
        self.requests = 0
        self.received: list[dict] = []
        self.keys: Counter = Counter()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def handle_error(self, request, client_address) -> None:
        """A sender killed mid-request (the fault tests) closes its connection: not an error here."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
