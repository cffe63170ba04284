"""The durable outbox: an event is a row committed in the same transaction as
what it announces, with one delivery row per registered webhook. Delivery (at
least once, retried with backoff) reads these rows: a kill at any moment loses
no committed event, and a redelivered event keeps its id."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any, Callable

#: The events a webhook receives.
TYPES = ("case.opened", "case.decided", "artist.registered", "lookback.finished")

#: Called (no arguments) by every :func:`enqueue` of this process: a delivery
#: worker's wake-up (:mod:`mimicry.moderation.delivery`). A listener must not
#: block: it runs inside the enqueuing transaction.
_listeners: list[Callable[[], None]] = []


def listen(fn: Callable[[], None]) -> None:
    """Calls ``fn()`` whenever this process enqueues an event (until :func:`unlisten`)."""
    _listeners.append(fn)


def unlisten(fn: Callable[[], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def enqueue(db: sqlite3.Connection, type_: str, data: dict[str, Any]) -> str:
    """Adds event ``type_`` with ``data`` inside the caller's transaction, due
    now at every registered webhook; returns its id (``evt_`` + 32 hex)."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event_id = "evt_" + uuid.uuid4().hex
    now = time.time()
    db.execute("INSERT INTO events(id, type, created, data) VALUES(?, ?, ?, ?)",
               (event_id, type_, int(now), json.dumps(data, ensure_ascii=False, sort_keys=True)))
    db.execute("INSERT INTO deliveries(event_id, webhook_id, next_at) SELECT ?, id, ? FROM webhooks",
               (event_id, now))
    for fn in list(_listeners):
        fn()
    return event_id


def body(event_id: str, type_: str, created: int, data: str) -> bytes:
    """The bytes POSTed for an event: ``{"id", "type", "created", "data"}``."""
    return json.dumps({"id": event_id, "type": type_, "created": created, "data": json.loads(data)},
                      ensure_ascii=False, sort_keys=True).encode()
