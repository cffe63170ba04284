"""Sending the outbox: a worker thread that POSTs each due delivery to its
endpoint, signed (:func:`mimicry.moderation.webhooks.signature`).

Promises:

- At least once: a delivery is marked delivered only after its endpoint
  answered 2xx, in a transaction of its own; a kill between the answer and
  that commit sends the event again, with the same id (receivers deduplicate
  on ``id``).
- A failed delivery (no answer within ``timeout_s``, a refused connection, a
  status other than 2xx, a redirect: redirects are not followed) is tried
  again after ``first_delay_s``, doubling with each failure up to
  ``max_delay_s``; the endpoint's other deliveries due before then wait with
  it, and once it answers again its waiting deliveries are due at once. After
  ``give_up_s`` from the event's creation a failing delivery is given up
  (``gave_up_at``); every delivery is tried at least once.
- The worker wakes at once when this process enqueues an event
  (:func:`mimicry.moderation.events.listen`), and every ``poll_s`` for events
  other processes wrote and retries that came due. Deliveries go one at a
  time, oldest due first; attempts, the last error and the delivery time are
  in the ``deliveries`` table.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from mimicry import __version__
from mimicry.jobs import ThreadJob
from mimicry.moderation import events
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.webhooks import HEADER, loopback, signature
from mimicry.settings import Settings

log = logging.getLogger(__name__)

#: Shortest wait between two tries, whatever the settings (no busy loop).
MIN_DELAY_S = 0.01
#: The most of an answer's body read (and dropped).
ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Policy:
    """When to try: first retry delay, its cap, when to give up (after the
    event's creation), one POST's timeout, the timer, deliveries per pass."""

    first_delay_s: float = 10.0
    max_delay_s: float = 3600.0
    give_up_s: float = 86400.0
    timeout_s: float = 10.0
    poll_s: float = 5.0
    batch: int = 100

    @classmethod
    def from_settings(cls, s: Settings) -> "Policy":
        return cls(s.webhook_retry_s, s.webhook_retry_max_s, s.webhook_give_up_s, s.webhook_timeout_s,
                   s.webhook_poll_s)

    def delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed try (1, 2, ...)."""
        return max(MIN_DELAY_S, min(self.max_delay_s, self.first_delay_s * 2.0 ** min(attempts - 1, 60)))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib's signature
        return None  # a 3xx is an answer that is not 2xx: a failure


_DIRECT = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
_PROXIED = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> str | None:
    """POSTs ``body`` to ``url``; None when it answered 2xx, else the reason
    (``HTTP 500``, ``timed out``, ...). Loopback never goes through a proxy."""
    opener = _DIRECT if loopback(urlsplit(url).hostname or "") else _PROXIED
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            answer.read(ANSWER_BYTES)
            status = answer.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return (str(reason) or type(reason).__name__)[:300]
    return None if 200 <= status < 300 else f"HTTP {status}"


Sender = Callable[[str, bytes, "dict[str, str]", float], "str | None"]

_DUE = ("SELECT d.event_id, d.webhook_id, d.attempts, e.type, e.created, e.data, w.url, w.secret "
        "FROM deliveries d JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id "
        "WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.next_at <= ? "
        "ORDER BY e.created, e.rowid LIMIT ?")  # oldest first: the oldest probes a failing endpoint
_PENDING = "delivered_at IS NULL AND gave_up_at IS NULL"


class Deliverer(ThreadJob):
    """The worker of one moderation database: :meth:`start`, :meth:`stop`
    (both idempotent), :meth:`wake`; :meth:`run_once` is one pass, for tests.
    ``before`` runs at the start of each pass (the service announces
    registrations there)."""

    thread_name = "mimicry-webhooks"

    def __init__(self, mdb: ModerationDB, policy: Policy | None = None, send: Sender = post,
                 before: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.mdb, self.policy, self.send, self.before = mdb, policy or Policy(), send, before
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for due deliveries now (called by every enqueue of this process)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            events.listen(self.wake)
        super().start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops after the POST in progress (if any) ends."""
        events.unlisten(self.wake)
        super().stop(timeout)

    def _wake_up(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    if self.before is not None:
                        self.before()
                    if self.run_once() >= self.policy.batch:
                        continue  # more are due
                    wait = self.policy.poll_s
                    (soonest,) = self.mdb.read(f"SELECT MIN(next_at) FROM deliveries WHERE {_PENDING}")[0]
                    if soonest is not None:
                        wait = min(wait, max(0.0, soonest - time.time()))
                except Exception:  # noqa: BLE001 - a failed pass must not end the worker
                    log.exception("webhooks: a delivery pass failed; trying again in %.1f s", self.policy.poll_s)
                    wait = self.policy.poll_s
                self._wake.wait(max(MIN_DELAY_S, wait))
        finally:
            self.mdb.close()  # this thread's connection

    def run_once(self, now: float | None = None) -> int:
        """Sends every delivery due at ``now`` (at most ``batch``); returns how many were tried."""
        # A write transaction, to wait for an enqueue in progress to commit (the wake-up comes from inside it).
        with self.mdb.transaction() as db:
            due = db.execute(_DUE, (time.time() if now is None else now, self.policy.batch)).fetchall()
        failed: set[str] = set()
        for event_id, webhook_id, attempts, type_, created, data, url, secret in due:
            if self._stop.is_set():
                break
            if webhook_id in failed:
                continue  # its endpoint just failed: it waits with the failed delivery
            body = events.body(event_id, type_, created, data)
            headers = {"Content-Type": "application/json", "User-Agent": f"mimicry/{__version__}",
                       "X-Mimicry-Event": type_, HEADER: signature(secret, body, int(time.time()))}
            error = self.send(url, body, headers, self.policy.timeout_s)
            self._record(event_id, webhook_id, attempts + 1, created, error)
            if error is not None:
                failed.add(webhook_id)
        return len(due)

    def _record(self, event_id: str, webhook_id: str, attempts: int, created: float, error: str | None) -> None:
        now = time.time()
        with self.mdb.transaction() as db:
            if error is None:
                db.execute("UPDATE deliveries SET attempts=?, delivered_at=?, last_error=NULL "
                           "WHERE event_id=? AND webhook_id=?", (attempts, now, event_id, webhook_id))
                db.execute(f"UPDATE deliveries SET next_at=? WHERE webhook_id=? AND {_PENDING} AND next_at>?",
                           (now, webhook_id, now))  # it answers again: what waited for it is due
                return
            retry_at = now + self.policy.delay(attempts)
            if retry_at > created + self.policy.give_up_s:
                db.execute("UPDATE deliveries SET attempts=?, gave_up_at=?, last_error=? "
                           "WHERE event_id=? AND webhook_id=?", (attempts, now, error, event_id, webhook_id))
                log.warning("webhooks: gave up %s to %s after %d tries (%s)", event_id, webhook_id, attempts, error)
            else:
                db.execute("UPDATE deliveries SET attempts=?, next_at=?, last_error=? "
                           "WHERE event_id=? AND webhook_id=?", (attempts, retry_at, error, event_id, webhook_id))
            db.execute(f"UPDATE deliveries SET next_at=? WHERE webhook_id=? AND {_PENDING} AND next_at<?",
                       (retry_at, webhook_id, retry_at))  # the endpoint's others wait with it
