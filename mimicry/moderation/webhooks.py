"""Webhook endpoints: the URLs a hub registers to be told about events, the
signature every POST carries, and the ``artist.registered`` events read from
the index's audit log.

Promises:

- An endpoint is ``https://`` anywhere, or plain ``http://`` to loopback only
  (``localhost``, ``127.0.0.0/8``, ``::1``: tests and sidecars); anything else
  is an :class:`~mimicry.errors.InputError` naming the URL and the reason.
- Registering answers the endpoint's secret this once; listing never shows it.
- An endpoint receives the events enqueued after it was registered, not the
  ones before (no replay); removing it drops its pending deliveries.
- Every POST is signed: ``X-Mimicry-Signature: t=<unix seconds>,v1=<hex
  HMAC-SHA256 keyed with the secret (UTF-8) of "{t}.{raw body}">``, ``t`` the
  time of that attempt (a retry is signed again).
- :func:`announce_registrations` enqueues one ``artist.registered`` per
  registration in the audit log, exactly once (its position in the log and
  the events commit together), so a registration committed just before a
  kill is announced when the service starts again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from mimicry.errors import InputError, NotFoundError, quoted
from mimicry.moderation import events
from mimicry.moderation.db import ModerationDB

#: The header that carries the signature.
HEADER = "X-Mimicry-Signature"
#: The longest URL an endpoint may have.
URL_CHARS = 2048
#: The most endpoints one index may have (each event is one delivery per endpoint).
MAX_ENDPOINTS = 100
#: The meta key holding the last audit entry :func:`announce_registrations` read.
AUDIT_SEEN = "webhooks.audit_seen"


@dataclass(frozen=True)
class Webhook:
    """A registered endpoint as listed (never its secret), with its deliveries
    so far: ``pending`` (not yet delivered, still tried), ``delivered``,
    ``gave_up`` (failed for ``MIMICRY_WEBHOOK_GIVE_UP`` seconds) and the last
    error of a pending one."""

    id: str
    url: str
    added_at: float
    pending: int = 0
    delivered: int = 0
    gave_up: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Registered:
    """A new endpoint: its id, URL and secret (shown this once)."""

    id: str
    url: str
    secret: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def loopback(host: str) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: ``localhost`` or a loopback address."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """``url`` when it may be an endpoint (https, or http to loopback; a host;
    no user name or password, no fragment, no spaces; at most
    :data:`URL_CHARS` characters), else :class:`InputError` saying why."""
    if not isinstance(url, str) or not url or len(url) > URL_CHARS:
        raise InputError(f"webhook URL {quoted(url)}: 1 to {URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InputError(f"webhook URL {quoted(url)}: no spaces or control characters")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError as exc:
        raise InputError(f"webhook URL {quoted(url)}: unreadable ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise InputError(f"webhook URL {quoted(url)}: use https:// (or http:// to loopback)")
    if not host:
        raise InputError(f"webhook URL {quoted(url)}: no host")
    if parts.username is not None or parts.password is not None:
        raise InputError(f"webhook URL {quoted(url)}: no user name or password in the URL "
                         "(the signature authenticates each POST)")
    if parts.fragment:
        raise InputError(f"webhook URL {quoted(url)}: no fragment (#...)")
    if parts.scheme == "http" and not loopback(host):
        raise InputError(f"webhook URL {quoted(url)}: plain http is allowed to loopback only "
                         "(localhost, 127.0.0.1, ::1); use https://")
    return url


def register(mdb: ModerationDB, url: str) -> Registered:
    """Registers endpoint ``url`` (:func:`check_url`); answers its id
    (``wh_`` + 16 hex) and its secret (``whsec_`` + 43 characters), which is
    shown this once. It receives events enqueued from now on."""
    check_url(url)
    hook = Registered("wh_" + uuid.uuid4().hex[:16], url, "whsec_" + secrets.token_urlsafe(32))
    with mdb.transaction() as db:
        (n,) = db.execute("SELECT COUNT(*) FROM webhooks").fetchone()
        if n >= MAX_ENDPOINTS:
            raise InputError(f"{n} webhooks are registered, the most one index may have; remove one first")
        db.execute("INSERT INTO webhooks(id, url, secret, added_at) VALUES(?, ?, ?, ?)",
                   (hook.id, hook.url, hook.secret, time.time()))
    return hook


def listed(mdb: ModerationDB) -> list[Webhook]:
    """Every endpoint, oldest first, with its deliveries' counts (no secrets)."""
    rows = mdb.read(
        "SELECT w.id, w.url, w.added_at,"
        " COALESCE(SUM(d.delivered_at IS NULL AND d.gave_up_at IS NULL), 0),"
        " COALESCE(SUM(d.delivered_at IS NOT NULL), 0), COALESCE(SUM(d.gave_up_at IS NOT NULL), 0),"
        " (SELECT last_error FROM deliveries x WHERE x.webhook_id = w.id AND x.delivered_at IS NULL"
        "  AND x.gave_up_at IS NULL AND x.last_error IS NOT NULL ORDER BY x.next_at DESC LIMIT 1)"
        " FROM webhooks w LEFT JOIN deliveries d ON d.webhook_id = w.id"
        " GROUP BY w.id ORDER BY w.added_at, w.id")
    return [Webhook(*r) for r in rows]


def remove(mdb: ModerationDB, webhook_id: str) -> None:
    """Removes endpoint ``webhook_id`` and its pending deliveries (:class:`NotFoundError` when none)."""
    with mdb.transaction() as db:
        if db.execute("DELETE FROM webhooks WHERE id=?", (webhook_id,)).rowcount == 0:
            raise NotFoundError(f"no webhook {quoted(webhook_id)}")


def signature(secret: str, body: bytes, t: int) -> str:
    """The ``X-Mimicry-Signature`` value of ``body`` sent at ``t`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(int(t)).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={int(t)},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float | None = None, tolerance_s: float = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within
    ``tolerance_s`` of ``now`` (compared in constant time): what a receiver checks."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        return False
    expected = signature(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


AuditReader = Callable[[int, int], Sequence[Any]]


def announce_registrations(mdb: ModerationDB, audit: AuditReader, page: int = 500) -> int:
    """Enqueues ``artist.registered`` (``{"artist": name}``) for each
    ``register_artist`` entry of the index's audit log (``audit(after,
    limit)``, e.g. :meth:`StyleIndex.audit`) not yet announced; returns how
    many. The first call on a database announces nothing and starts from the
    log's end: registrations before webhooks existed are not replayed."""
    announced = 0
    while True:
        with mdb.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (AUDIT_SEEN,)).fetchone()
            seen = int(row[0]) if row else None
            entries = audit(seen or 0, page)
            if seen is None:
                last = entries[-1].id if entries else 0
                while len(entries) == page:  # the log's end: nothing before it is announced
                    entries = audit(last, page)
                    last = entries[-1].id if entries else last
                db.execute("INSERT INTO meta(key, value) VALUES(?, ?)", (AUDIT_SEEN, str(last)))
                return 0
            for e in entries:
                if e.action == "register_artist":
                    events.enqueue(db, "artist.registered", {"artist": e.target})
                    announced += 1
            if entries:
                db.execute("UPDATE meta SET value=? WHERE key=?", (str(entries[-1].id), AUDIT_SEEN))
        if len(entries) < page:
            return announced
