"""Moderators: named tokens that read and decide cases. Only each token's
sha256 is stored; the token itself is shown once, when it is made."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from mimicry.errors import ConflictError, InputError, NotFoundError, quoted
from mimicry.moderation.db import ModerationDB
from mimicry.registry import token_hash

#: Names decisions use for callers who are not moderators.
RESERVED = ("admin", "anonymous")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


@dataclass(frozen=True)
class Moderator:
    name: str
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add(mdb: ModerationDB, name: str) -> str:
    """Adds moderator ``name`` (letters, digits, space, ``._-``; at most 64;
    unique whatever the case) and returns their new token."""
    if not NAME.match(name or ""):
        raise InputError(f"moderator name {quoted(name)}: 1 to 64 letters, digits, spaces, '.', '_' or '-'")
    if name.lower() in RESERVED:
        raise InputError(f"moderator name {quoted(name)} is reserved (decisions name the admin so)")
    token = "mod_" + secrets.token_urlsafe(32)
    with mdb.transaction() as db:
        if db.execute("SELECT 1 FROM moderators WHERE name=?", (name,)).fetchone():
            raise ConflictError(f"a moderator {quoted(name)} exists already")
        db.execute("INSERT INTO moderators(name, token_sha256, added_at) VALUES(?, ?, ?)",
                   (name, token_hash(token), time.time()))
    return token


def listed(mdb: ModerationDB) -> list[Moderator]:
    return [Moderator(*r) for r in mdb.read("SELECT name, added_at FROM moderators ORDER BY name")]


def revoke(mdb: ModerationDB, name: str) -> None:
    """Removes moderator ``name``: their token stops working at once."""
    with mdb.transaction() as db:
        if db.execute("DELETE FROM moderators WHERE name=?", (name,)).rowcount == 0:
            raise NotFoundError(f"no moderator {quoted(name)}")


def who(mdb: ModerationDB, token: str) -> str | None:
    """The moderator whose token ``token`` is, or None."""
    return by_digest(mdb, token_hash(token))


def by_digest(mdb: ModerationDB, digest: str) -> str | None:
    """The moderator whose token has the sha256 ``digest`` (hex), or None (a
    session signed in with a token keeps only its sha256)."""
    rows = mdb.read("SELECT name FROM moderators WHERE token_sha256=?", (digest,))
    return rows[0][0] if rows else None
