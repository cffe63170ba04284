"""A webhook receiver for mimicry's events, standard library only.

    WEBHOOK_SECRET=whsec_... python webhook_receiver.py 8080

Every POST is checked before it is read as JSON: the signature (HMAC-SHA256
keyed with the endpoint's secret, compared in constant time) over the exact
bytes received, and its timestamp (at most 5 minutes old or ahead). A
refused POST gets 400 and nothing is done; a body cut short (the sender
went away mid-request) is dropped unanswered. A delivery may come more than
once, always with the same event id, so the handler skips ids it has seen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

TOLERANCE_S = 300  # refuse signatures older (or further ahead) than 5 minutes
MAX_BODY = 1024 * 1024


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """Whether ``header`` (X-Mimicry-Signature: ``t=<unix>,v1=<hex>``) signs
    ``body`` with ``secret``, at a time within TOLERANCE_S of ``now``."""
    try:
        fields = dict(part.strip().split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > TOLERANCE_S:
        return False  # an old request replayed, or a clock far off
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def printer() -> Callable[[dict], None]:
    """The default handler: prints each event once (deliveries repeat ids)."""
    seen: set[str] = set()

    def handle(event: dict) -> None:
        if event["id"] in seen:
            return
        seen.add(event["id"])
        print(event["created"], event["type"], json.dumps(event["data"]), flush=True)

    return handle


def make_server(secret: str, port: int, handle: Callable[[dict], None], host: str = "127.0.0.1"
                ) -> ThreadingHTTPServer:
    """An HTTP server on ``host:port`` that passes each verified event to ``handle``."""

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._answer(400, b"bad length")
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                return None  # the sender went away mid-request (it retries): nothing to answer or do
            if not verify(secret, self.headers.get("X-Mimicry-Signature", ""), body):
                return self._answer(400, b"bad signature")
            handle(json.loads(body))
            self._answer(204, b"")

        def _answer(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: object) -> None:
            pass  # quiet: the handler prints what matters

    return ThreadingHTTPServer((host, port), Receiver)


if __name__ == "__main__":
    server = make_server(os.environ["WEBHOOK_SECRET"], int(sys.argv[1]) if len(sys.argv) > 1 else 8080,
                         printer())
    server.serve_forever()
