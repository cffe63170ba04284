"""A webhook receiver for tests, on loopback in a thread: checks each POST's
signature with the docs' example receiver (``docs/examples/webhook_receiver.py``)
(a body cut short by a killed sender is dropped and counted, as the example drops it)
and records every arrival, duplicates included; answers ``status`` (a non-2xx
one plays a receiver that is down)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "webhook_receiver.py"


def example():
    """The docs' example receiver, as a module."""
    spec = importlib.util.spec_from_file_location("webhook_receiver_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.secret: str | None = None
        self.status = 204
        self.events: list[dict] = []
        self.refused = 0
        self.bad_signatures = 0
        self.cut_short = 0
        self.lock = threading.Lock()
        verify = example().verify
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender was killed mid-request: as the docs' example, drop it
                    with owner.lock:
                        owner.cut_short += 1
                    self.close_connection = True
                    return
                with owner.lock:
                    status = owner.status
                    if not 200 <= status < 300:
                        owner.refused += 1
                    elif not verify(owner.secret or "", self.headers.get("X-Mimicry-Signature", ""), body):
                        owner.bad_signatures += 1
                        status = 400
                    else:
                        owner.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def ids(self) -> set[str]:
        with self.lock:
            return {e["id"] for e in self.events}

    def wait_for(self, done: Callable[["Receiver"], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: not done in {timeout} s ({len(self.events)} events, "
                                     f"{self.refused} refused, {self.bad_signatures} bad signatures)")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
