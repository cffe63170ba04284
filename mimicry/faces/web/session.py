"""Who is signed in to the web pages: the token's owner (:func:`who_is`), the
signed session cookie (:func:`issue`, :func:`read`), and CSRF tokens.

Promises:

- The cookie is ``base64url(JSON).base64url(HMAC-SHA256)`` keyed by a secret
  kept in the index folder (``web-secret``, created once with mode 0600); it
  names the role, the name and the sha256 of the token signed in with, never
  the token. It is HttpOnly, SameSite=Strict and lasts :data:`LIFETIME_S`; the
  signed time of issue is checked on every request too, so a cookie kept past
  its expiry is no session.
- A session lasts only while its token does: each request looks the token's
  sha256 up again (a revoked moderator, a rotated or withdrawn artist token,
  a changed admin token ends the session at once).
- Every form carries a CSRF token bound to its session (or, before sign-in,
  to a cookie of its own) and checked on POST in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicry.moderation import moderators
from mimicry.moderation.db import ModerationDB
from mimicry.registry import artist_for_token_sha256, token_hash

log = logging.getLogger(__name__)

#: The session cookie's name, and how long a session lasts (12 hours).
COOKIE = "mimicry_session"
LIFETIME_S = 12 * 3600
#: The cookie carrying the sign-in form's CSRF token (before there is a session).
PRE_COOKIE = "mimicry_signin"
SECRET_FILE = "web-secret"
ROLES = ("admin", "moderator", "artist")


@dataclass(frozen=True)
class Who:
    """Whose a token is: ``role`` admin, moderator or artist, and their ``name``
    (``admin`` for the admin)."""

    role: str
    name: str


@dataclass(frozen=True)
class Session:
    """A signed-in session: who, the sha256 of their token, when it was issued,
    and its CSRF token."""

    who: Who
    digest: str
    issued: int
    csrf: str


def who_is(svc: Any, token: str) -> Who | None:
    """Whose ``token`` is: the admin's, a moderator's, an artist's, or nobody's
    (None), exactly as the API answers it (:func:`mimicry.faces.http.identity.who_is`);
    an ``insecure_no_auth`` service's anonymous caller has no session here."""
    from mimicry.faces.http.identity import who_is as api_who_is

    ident = api_who_is(svc, token) if token else None
    if ident is None or ident.role not in ("admin", "moderator", "artist"):
        return None
    return Who(ident.role, ident.name or "admin")


def still_valid(s: Session, admin_token: str | None, mdb: ModerationDB, ix: Any) -> bool:
    """Whether the token the session was signed in with still names the same person."""
    if s.who.role == "admin":
        return bool(admin_token) and hmac.compare_digest(s.digest, token_hash(admin_token))
    if s.who.role == "moderator":
        return mdb is not None and moderators.by_digest(mdb, s.digest) == s.who.name
    return artist_for_token_sha256(ix, s.digest) == s.who.name


def load_secret(folder: Path) -> bytes:
    """The signing secret of the index at ``folder``: read from ``web-secret``,
    or made (64 hex characters, mode 0600). It is written whole to a temporary
    file and linked into place (``os.link`` fails if another process got there
    first, and then both use that one), so a kill never leaves a short or empty
    secret; a file shorter than 32 bytes is not a secret and is replaced. A
    folder that cannot be written gets a secret for this process only
    (sessions end when it stops), with a warning."""
    path = Path(folder) / SECRET_FILE
    for _ in range(3):
        try:
            data = path.read_bytes().strip()
            if len(data) >= 32:
                return data
            path.unlink()  # damaged (a kill in an older version's write): made again
        except FileNotFoundError:
            pass
        except OSError:
            break
        try:
            _link_new_secret(path)
        except FileExistsError:
            continue  # another process made it: read theirs
        except OSError as exc:
            log.warning("cannot keep the web session secret in the index folder (%s): "
                        "sessions last until this process stops", exc.strerror or exc)
            break
    return secrets.token_hex(32).encode()


def _link_new_secret(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".web-secret-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # atomic, and never over an existing secret
    finally:
        os.unlink(tmp)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: str, payload: str) -> bytes:
    return hmac.new(secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()


def issue(secret: bytes, who: Who, token: str, now: float | None = None) -> tuple[str, Session]:
    """A new session for ``who``, signed in with ``token``: (cookie value, session)."""
    s = Session(who, token_hash(token), int(time.time() if now is None else now), secrets.token_urlsafe(24))
    body = _b64(json.dumps({"r": who.role, "n": who.name, "d": s.digest, "t": s.issued, "x": s.csrf},
                           separators=(",", ":")).encode())
    return f"{body}.{_b64(_mac(secret, 'session', body))}", s


def read(secret: bytes, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value carries, or None: unsigned, forged, malformed,
    issued more than :data:`LIFETIME_S` ago or in the future."""
    if not value or value.count(".") != 1 or len(value) > 4096:
        return None
    body, sig = value.split(".")
    try:
        if not hmac.compare_digest(_unb64(sig), _mac(secret, "session", body)):
            return None
        d = json.loads(_unb64(body))
        s = Session(Who(str(d["r"]), str(d["n"])), str(d["d"]), int(d["t"]), str(d["x"]))
    except (ValueError, KeyError, TypeError):
        return None
    age = (time.time() if now is None else now) - s.issued
    if s.who.role not in ROLES or not -60 <= age < LIFETIME_S:
        return None
    return s


def csrf_ok(expected: str | None, given: object) -> bool:
    """Whether the form's CSRF token ``given`` is ``expected``, in constant time."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def cookie_args(secure: bool, max_age: int = LIFETIME_S) -> dict[str, Any]:
    """The attributes every cookie of the pages is set with."""
    return {"max_age": max_age, "httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
