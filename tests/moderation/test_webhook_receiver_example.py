"""The docs' example receiver (``docs/examples/webhook_receiver.py``): the page
shows the file as it is, and the receiver accepts a signed event, refuses a
forged signature, an old request replayed, and a body changed after signing,
and drops unanswered a body cut short by a sender that went away."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mimicry.moderation import events, webhooks
from receiver import EXAMPLE, Receiver, example

PAGE = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_test-secret"


def test_the_docs_show_the_example_file_as_it_is():
    text = PAGE.read_text()
    start, end = "<!-- receiver:start -->\n```python\n", "```\n<!-- receiver:end -->"
    assert text.count(start) == 1 and text.count(end) == 1, "docs/webhooks.md lost its receiver markers"
    shown = text.split(start, 1)[1].split(end, 1)[0]
    assert shown == EXAMPLE.read_text(), "docs/webhooks.md shows another receiver than docs/examples/"


def _event() -> bytes:
    return events.body("evt_" + "a" * 32, "case.opened", int(time.time()), json.dumps({"case": 7}))


@pytest.fixture
def served():
    got: list[dict] = []
    server = example().make_server(SECRET, 0, got.append)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", got
    server.shutdown()
    server.server_close()


def _post(url: str, body: bytes, header: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"X-Mimicry-Signature": header, "Content-Type": "application/json"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_signed_event_is_accepted(served):
    url, got = served
    body = _event()
    assert _post(url, body, webhooks.signature(SECRET, body, int(time.time()))) == 204
    assert got == [json.loads(body)]


def test_a_forged_signature_is_refused(served):
    url, got = served
    body = _event()
    now = int(time.time())
    for header in (webhooks.signature("whsec_guessed", body, now), f"t={now},v1=" + "0" * 64, "", "t=x,v1=y",
                   f"t={now}"):
        assert _post(url, body, header) == 400, header
    assert got == []


def test_an_old_request_replayed_is_refused(served):
    url, got = served
    body = _event()
    then = int(time.time()) - 6 * 60  # captured 6 minutes ago, signature genuine
    assert _post(url, body, webhooks.signature(SECRET, body, then)) == 400
    ahead = int(time.time()) + 6 * 60
    assert _post(url, body, webhooks.signature(SECRET, body, ahead)) == 400
    assert got == []


def test_a_body_changed_after_signing_is_refused(served):
    url, got = served
    body = _event()
    header = webhooks.signature(SECRET, body, int(time.time()))
    changed = body.replace(b'"case": 7', b'"case": 8')
    assert changed != body and _post(url, changed, header) == 400
    assert got == []


def test_verify_agrees_with_the_service_at_the_edges():
    verify = example().verify
    body = _event()
    t = 1_800_000_000
    header = webhooks.signature(SECRET, body, t)
    assert verify(SECRET, header, body, now=t + 300) and not verify(SECRET, header, body, now=t + 301)
    assert verify(SECRET, header, body, now=t + 300) == webhooks.verify(SECRET, header, body, now=t + 300)


def test_the_printer_skips_a_delivery_seen_before(capsys):
    handle = example().printer()
    event = json.loads(_event())
    handle(event)
    handle(event)
    assert capsys.readouterr().out.count("case.opened") == 1


def _cut_short(port: int, body: bytes, header: str) -> bytes:
    """Sends the headers and half the body, then closes its side (a sender killed
    mid-request); returns what the receiver answered."""
    head = (f"POST /hooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Mimicry-Signature: {header}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head + body[: len(body) // 2])
        conn.shutdown(socket.SHUT_WR)
        return conn.recv(1024)


def test_a_body_cut_short_is_dropped_unanswered_not_called_forged(served):
    url, got = served
    body = _event()
    header = webhooks.signature(SECRET, body, int(time.time()))
    assert _cut_short(int(url.rsplit(":", 1)[1].strip("/")), body, header) == b""
    assert got == []
    assert _post(url, body, header) == 204 and got == [json.loads(body)]  # the retry is accepted


def test_the_test_receiver_counts_a_cut_short_body_apart_from_a_bad_signature():
    receiver = Receiver()
    receiver.secret = SECRET
    try:
        body = _event()
        assert _cut_short(receiver.port, body, webhooks.signature(SECRET, body, int(time.time()))) == b""
        assert _post(receiver.url, body, webhooks.signature("whsec_guessed", body, int(time.time()))) == 400
        assert (receiver.cut_short, receiver.bad_signatures, receiver.events) == (1, 1, [])
    finally:
        receiver.close()
