"""The moderation writes a service makes on someone's behalf, each also an
entry of the index's audit log (``GET /v1/audit``, ``StyleIndex.audit``):
deciding a case, adding and revoking a moderator, purging an uploader's
history.

The moderation database and the catalogue are two SQLite files, never
written in one transaction. Each function here takes the index's write lock
first (at most ``wait_s``, else :class:`~mimicry.errors.LockedError`, and
nothing is written), then commits the moderation change, then its audit row
under the same lock: no other writer can come between them, and an error in
the moderation change (an unknown case, a bad decision) leaves no audit row.
Only a kill between the two commits can leave a change without its row; the
decision's own row in ``decisions`` carries the same request id.

Audit rows: ``actor`` is who acted (``admin``, ``moderator``, or
``anonymous`` on an unauthenticated loopback service), ``actor_artist`` stays
empty (it names artists only), and the moderator's name is in ``detail``:

- ``decide_case``, target ``case:<id>``, detail ``{"decision", "state", "moderator"}`` (JSON);
- ``add_moderator`` / ``revoke_moderator``, target the moderator's name;
- ``purge_history``, target ``uploader-sha256:<hex>`` (the uploader's id is
  what was purged, so the log keeps only its hash), detail
  ``{"scans", "background_removed"}`` (JSON): the scans removed, and how many
  of the stored background's images were theirs and left it (the index was
  then recalibrated on the rest).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from mimicry.moderation import background, cases, history, moderators
from mimicry.moderation.db import ModerationDB
from mimicry.registry import Actor

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.index import StyleIndex


def decide(ix: StyleIndex, mdb: ModerationDB, case_id: int, decision: str, note: str, actor: Actor,
           moderator: str, wait_s: float | None = None) -> cases.Case:
    """``moderator``'s ``decision`` on case ``case_id`` (:func:`.cases.decide`)
    and its audit row; the case as it is now."""
    with ix.store.writer(wait_s, build=False) as w:
        case = cases.decide(mdb, case_id, decision, note, moderator, actor.request_id)
        detail = json.dumps({"decision": decision, "state": case.state, "moderator": moderator}, sort_keys=True)
        w.record(actor.kind, None, "decide_case", f"case:{case_id}", detail, actor.request_id)
    return case


def add_moderator(ix: StyleIndex, mdb: ModerationDB, name: str, actor: Actor, wait_s: float | None = None) -> str:
    """Adds moderator ``name`` (:func:`.moderators.add`) and its audit row; their token."""
    with ix.store.writer(wait_s, build=False) as w:
        token = moderators.add(mdb, name)
        w.record(actor.kind, None, "add_moderator", name, "", actor.request_id)
    return token


def revoke_moderator(ix: StyleIndex, mdb: ModerationDB, name: str, actor: Actor,
                     wait_s: float | None = None) -> None:
    """Revokes moderator ``name`` (:func:`.moderators.revoke`) and its audit row."""
    with ix.store.writer(wait_s, build=False) as w:
        moderators.revoke(mdb, name)
        w.record(actor.kind, None, "revoke_moderator", name, "", actor.request_id)


def purge_uploader(ix: StyleIndex, mdb: ModerationDB, uploader: str, actor: Actor,
                   wait_s: float | None = None) -> int:
    """Removes everything recorded of ``uploader`` (:func:`.history.purge_uploader`),
    their images' vectors from the index's stored background (recalibrating
    a calibrated index on the rest: :func:`.background.forget`), and writes
    its audit row (the uploader by sha256 only); how many scans went."""
    with ix.store.writer(wait_s, build=False) as w:
        # the background first: a kill after it leaves the history whole, so the purge can be run again
        forgotten = background.forget(w, background.uploader_vectors(mdb, uploader))
        n = history.purge_uploader(mdb, uploader)
        digest = hashlib.sha256(uploader.encode()).hexdigest()
        detail = json.dumps({"scans": n, "background_removed": forgotten}, sort_keys=True)
        w.record(actor.kind, None, "purge_history", f"uploader-sha256:{digest}", detail, actor.request_id)
    return n
