"""Webhooks: which URLs may be endpoints, the signature, the audit log's
registrations announced exactly once, and the delivery worker: at least once,
backoff per endpoint, give-up after the deadline, at once on a new event, and
everything delivered once a receiver that was down is back."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import pytest

from mimicry.errors import InputError, NotFoundError
from mimicry.moderation import events, webhooks
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.delivery import Deliverer, Policy, post
from receiver import Receiver

FAST = Policy(first_delay_s=0.05, max_delay_s=0.2, give_up_s=60, timeout_s=2, poll_s=5)


@pytest.fixture
def mdb(tmp_path) -> ModerationDB:
    return ModerationDB(tmp_path)


def _enqueue(mdb: ModerationDB, n: int = 1, type_: str = "case.opened") -> list[str]:
    with mdb.transaction() as db:
        return [events.enqueue(db, type_, {"case": i}) for i in range(n)]


def _deliveries(mdb: ModerationDB) -> list[tuple]:
    return mdb.read("SELECT event_id, attempts, delivered_at IS NOT NULL, gave_up_at IS NOT NULL, last_error "
                    "FROM deliveries ORDER BY rowid")


@pytest.mark.parametrize("url", ["https://hub.example/hooks", "https://10.0.0.5:8443/x?y=1",
                                 "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]:80/",
                                 "http://127.8.9.10/x"])
def test_https_anywhere_and_http_to_loopback_are_endpoints(url):
    assert webhooks.check_url(url) == url


@pytest.mark.parametrize("url, why", [
    ("http://hub.example/hooks", "loopback only"), ("http://10.0.0.5/x", "loopback only"),
    ("ftp://hub.example/x", "use https"), ("hub.example/x", "use https"), ("https:///x", "no host"),
    ("https://user:pw@hub.example/x", "no user name"), ("https://hub.example/x#f", "no fragment"),
    ("https://hub.example/a b", "no spaces"), ("https://hub.example:99999/x", "unreadable"),
    ("", "characters"), ("https://h.example/" + "x" * 3000, "characters")])
def test_other_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(InputError, match=why):
        webhooks.check_url(url)


def test_register_list_remove_never_lists_the_secret(mdb):
    hook = webhooks.register(mdb, "https://hub.example/a")
    assert hook.id.startswith("wh_") and hook.secret.startswith("whsec_") and len(hook.secret) > 40
    [listed] = webhooks.listed(mdb)
    assert listed.id == hook.id and hook.secret not in json.dumps(listed.to_dict())
    webhooks.remove(mdb, hook.id)
    assert webhooks.listed(mdb) == []
    with pytest.raises(NotFoundError, match="no webhook"):
        webhooks.remove(mdb, hook.id)


def test_a_new_endpoint_gets_the_events_from_then_on_not_older_ones(mdb):
    _enqueue(mdb, 2)
    hook = webhooks.register(mdb, "https://hub.example/a")
    [later] = _enqueue(mdb)
    assert mdb.read("SELECT event_id, webhook_id FROM deliveries") == [(later, hook.id)]
    webhooks.remove(mdb, hook.id)  # its pending deliveries go with it
    assert mdb.read("SELECT COUNT(*) FROM deliveries") == [(0,)]


def test_signature_is_hmac_sha256_of_time_dot_body():
    import hashlib
    import hmac

    body = b'{"id": "evt_1"}'
    header = webhooks.signature("whsec_k", body, 1700000000)
    mac = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert webhooks.verify("whsec_k", header, body, now=1700000100)
    assert not webhooks.verify("whsec_k", header, body + b" ", now=1700000100)  # body changed
    assert not webhooks.verify("whsec_other", header, body, now=1700000100)  # another secret
    assert not webhooks.verify("whsec_k", header, body, now=1700000301)  # older than 5 minutes
    assert not webhooks.verify("whsec_k", "v1=" + mac, body, now=1700000000)  # no time


@dataclass
class Entry:
    id: int
    action: str
    target: str


def test_registrations_in_the_audit_log_are_announced_once_from_the_first_call_on(mdb):
    log = [Entry(1, "register_artist", "old"), Entry(2, "add_uploads", "old")]
    audit = lambda after, limit: [e for e in log if e.id > after][:limit]  # noqa: E731
    assert webhooks.announce_registrations(mdb, audit, page=1) == 0  # the past is not replayed
    log += [Entry(3, "register_artist", "ana"), Entry(4, "remove_work", "ana"), Entry(5, "register_artist", "bo")]
    assert webhooks.announce_registrations(mdb, audit, page=2) == 2
    assert webhooks.announce_registrations(mdb, audit) == 0  # exactly once
    data = [json.loads(d) for t, d in mdb.read("SELECT type, data FROM events ORDER BY rowid")]
    assert data == [{"artist": "ana"}, {"artist": "bo"}]


class Sender:
    """A fake endpoint: fails while ``down``; records (url, body, headers)."""

    def __init__(self) -> None:
        self.down, self.sent = False, []

    def __call__(self, url, body, headers, timeout_s):
        self.sent.append((url, body, headers))
        return "connection refused" if self.down else None


def test_a_delivery_is_signed_and_marked_delivered(mdb):
    hook = webhooks.register(mdb, "https://hub.example/a")
    [eid] = _enqueue(mdb)
    send = Sender()
    assert Deliverer(mdb, FAST, send).run_once() == 1
    (url, body, headers), = send.sent
    event = json.loads(body)
    assert url == hook.url and event["id"] == eid and event["type"] == "case.opened" and event["data"] == {"case": 0}
    assert webhooks.verify(hook.secret, headers["X-Mimicry-Signature"], body)
    assert headers["X-Mimicry-Event"] == "case.opened" and headers["Content-Type"] == "application/json"
    assert _deliveries(mdb) == [(eid, 1, 1, 0, None)]
    assert Deliverer(mdb, FAST, send).run_once() == 0  # delivered: not sent again


def test_failures_back_off_per_endpoint_and_recovery_sends_the_backlog(mdb):
    webhooks.register(mdb, "https://hub.example/a")
    ids = _enqueue(mdb, 3)
    send = Sender()
    send.down = True
    worker = Deliverer(mdb, Policy(first_delay_s=10, max_delay_s=25, give_up_s=3600), send)
    now = time.time()
    assert worker.run_once(now) == 3 and len(send.sent) == 1  # the endpoint failed: the others wait with it
    assert _deliveries(mdb)[0][1:] == (1, 0, 0, "connection refused")
    assert worker.run_once(now + 5) == 0  # not due before the first delay
    assert worker.run_once(now + 11) == 3 and len(send.sent) == 2
    next_at = mdb.read("SELECT MAX(next_at) - MIN(next_at), MIN(next_at) FROM deliveries")[0]
    assert next_at[0] < 1e-6 and next_at[1] == pytest.approx(time.time() + 20, abs=2)  # doubled
    assert Policy(first_delay_s=10, max_delay_s=25).delay(3) == 25  # capped
    send.down = False
    assert worker.run_once(now + 60) == 3 and len(send.sent) == 5  # back: everything, at once
    assert [d[2] for d in _deliveries(mdb)] == [1, 1, 1] and {d[0] for d in _deliveries(mdb)} == set(ids)


def test_a_failing_delivery_is_given_up_after_the_deadline_having_been_tried(mdb):
    webhooks.register(mdb, "https://hub.example/a")
    [eid] = _enqueue(mdb)
    with mdb.transaction() as db:  # an event created 2 days ago, never tried (the service was down)
        db.execute("UPDATE events SET created = created - 172800")
    send = Sender()
    send.down = True
    worker = Deliverer(mdb, Policy(first_delay_s=1, give_up_s=86400), send)
    assert worker.run_once() == 1 and len(send.sent) == 1  # tried once all the same
    assert _deliveries(mdb) == [(eid, 1, 0, 1, "connection refused")]
    assert worker.run_once(time.time() + 10**6) == 0
    [listed] = webhooks.listed(mdb)
    assert (listed.pending, listed.delivered, listed.gave_up) == (0, 0, 1)


def test_the_worker_sends_a_new_event_at_once_not_at_the_next_poll(mdb):
    webhooks.register(mdb, "https://hub.example/a")
    send = Sender()
    worker = Deliverer(mdb, Policy(poll_s=30), send)
    worker.start()
    try:
        time.sleep(0.1)  # the worker is asleep, for 30 s
        start = time.monotonic()
        _enqueue(mdb)
        while not send.sent and time.monotonic() - start < 5:
            time.sleep(0.002)
        assert send.sent and time.monotonic() - start < 1.0
    finally:
        worker.stop()
    assert not worker.alive and worker.wake not in events._listeners


def test_a_receiver_down_for_a_while_gets_every_event_once_back(mdb):
    """Real HTTP on loopback: the receiver refuses (500) for a while, then answers."""
    receiver = Receiver()
    hook = webhooks.register(mdb, receiver.url)
    receiver.secret = hook.secret
    receiver.status = 500
    worker = Deliverer(mdb, FAST, post)
    worker.start()
    try:
        ids = _enqueue(mdb, 5) + _enqueue(mdb, 5, "case.decided")
        receiver.wait_for(lambda r: r.refused >= 3)  # retried while down
        receiver.status = 204
        receiver.wait_for(lambda r: set(ids) <= r.ids)
    finally:
        worker.stop()
        receiver.close()
    assert receiver.bad_signatures == 0
    rows = _deliveries(mdb)
    assert all(d[2] == 1 for d in rows) and len(receiver.events) == 10  # each once: no kill, no duplicate
    assert sum(d[1] for d in rows) == 10 + receiver.refused  # every refused POST is a recorded try
    [listed] = webhooks.listed(mdb)
    assert (listed.pending, listed.delivered) == (0, 10)


def test_a_refused_connection_and_a_redirect_are_failures():
    assert post("http://127.0.0.1:9/", b"{}", {}, 1) is not None  # nothing listens on port 9
    receiver = Receiver()
    receiver.status, receiver.secret = 302, "s"
    try:
        assert post(receiver.url, b"{}", {}, 2) == "HTTP 302"
    finally:
        receiver.close()


def test_stopping_an_idle_worker_is_prompt(mdb):
    worker = Deliverer(mdb, Policy(poll_s=60), Sender())
    worker.start()
    start = time.monotonic()
    worker.stop()
    worker.stop()  # idempotent
    assert time.monotonic() - start < 2 and threading.active_count() >= 1
