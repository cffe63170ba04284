"""Cases and decisions: a flagged upload or a model at tier ``imitates`` or
``review`` opens one case (one per upload id, one per model id; a scan without
an id is its own upload), which a moderator confirms, dismisses or escalates.

Promises: opening a case and its ``case.opened`` event commit together with
the scan that caused it; a later scan of the same upload or model joins its
case (the tier and the artists can only grow, and an open case stays one
case); a decided case is never reopened by a scan. Every decision is a row of
``decisions`` and a ``case.decided`` event, committed together.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from mimicry.errors import InputError, NotFoundError
from mimicry.moderation import events
from mimicry.moderation.db import ModerationDB

STATES = ("open", "confirmed", "dismissed", "escalated")
DECISIONS = {"confirm": "confirmed", "dismiss": "dismissed", "escalate": "escalated"}
#: How strong each tier is: a case keeps the strongest it has seen.
TIER_RANK = {"review": 1, "flagged": 2, "imitates": 2}
#: The longest note a decision may carry (characters).
NOTE_CHARS = 2000


@dataclass
class Decision:
    at: float
    moderator: str
    decision: str
    note: str


@dataclass
class Case:
    """One case: what was flagged (``kind`` upload or model, the hub's ``key``),
    its state, tier and artists (``artist`` the strongest), the scan behind it
    and the decisions so far."""

    id: int
    kind: str
    key: str
    state: str
    tier: str
    artist: str
    artists: list[str]
    scan_id: int
    source: str
    opened_at: float
    updated_at: float
    decisions: list[Decision] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "id, kind, key, state, tier, artist, artists, scan_id, source, opened_at, updated_at"


def _case(row: tuple) -> Case:
    return Case(*row[:6], json.loads(row[6]), *row[7:])


def open_case(db: sqlite3.Connection, kind: str, key: str, scan_id: int, tier: str, artists: Sequence[str],
              source: str = "scan") -> tuple[int, bool]:
    """Opens the case of ``kind``/``key`` (or joins the scan to it) inside the
    caller's transaction; returns (case id, whether it was opened now)."""
    row = db.execute(f"SELECT {_COLUMNS} FROM cases WHERE kind=? AND key=?", (kind, key)).fetchone()
    now = time.time()
    if row is None:
        cur = db.execute("INSERT INTO cases(kind, key, scan_id, tier, artist, artists, source, opened_at, "
                         "updated_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (kind, key, scan_id, tier, artists[0], json.dumps(list(artists)), source, now, now))
        case_id = int(cur.lastrowid)
        events.enqueue(db, "case.opened", {"case": case_id, "kind": kind, "tier": tier,
                                           "artists": list(artists), "source": source})
        return case_id, True
    case = _case(row)
    if case.state != "open":
        return case.id, False
    merged = case.artists + [a for a in artists if a not in case.artists]
    stronger = TIER_RANK.get(tier, 0) > TIER_RANK.get(case.tier, 0)
    db.execute("UPDATE cases SET scan_id=?, tier=?, artist=?, artists=?, updated_at=? WHERE id=?",
               (scan_id, tier if stronger else case.tier, artists[0] if stronger else case.artist,
                json.dumps(merged), now, case.id))
    return case.id, False


def get_case(mdb: ModerationDB, case_id: int) -> Case:
    """The case ``case_id`` with its decisions; :class:`NotFoundError` when there is none."""
    rows = mdb.read(f"SELECT {_COLUMNS} FROM cases WHERE id=?", (case_id,))
    if not rows:
        raise NotFoundError(f"no case {case_id}")
    case = _case(rows[0])
    case.decisions = [Decision(*r) for r in mdb.read(
        "SELECT at, moderator, decision, note FROM decisions WHERE case_id=? ORDER BY id", (case_id,))]
    return case


def list_cases(mdb: ModerationDB, state: str | None = None, artist: str | None = None, tier: str | None = None,
               since: float | None = None, until: float | None = None, after: int = 0,
               limit: int = 50, newest_first: bool = False) -> tuple[list[Case], int | None]:
    """Cases matching every filter given (``artist``: among the case's artists;
    ``since``/``until``: opened in that time), oldest first from id ``after``
    (with ``newest_first``: newest first, below id ``after`` when it is not 0);
    returns (cases, the ``after`` of the next page or None)."""
    if state is not None and state not in STATES:
        raise InputError(f"state {state!r}: use one of {', '.join(STATES)}")
    if tier is not None and tier not in TIER_RANK:
        raise InputError(f"tier {tier[:40]!r}: use one of {', '.join(TIER_RANK)}")
    if not newest_first:
        where, args = ["id > ?"], [after]
    else:
        where, args = (["id < ?"], [after]) if after else (["1"], [])
    for clause, value in (("state = ?", state), ("tier = ?", tier), ("opened_at >= ?", since),
                          ("opened_at < ?", until),
                          ("EXISTS (SELECT 1 FROM json_each(cases.artists) WHERE value = ?)", artist)):
        if value is not None:
            where.append(clause)
            args.append(value)
    order = "id DESC" if newest_first else "id"
    rows = mdb.read(f"SELECT {_COLUMNS} FROM cases WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?",
                    [*args, limit + 1])
    cases = [_case(r) for r in rows[:limit]]
    return cases, (cases[-1].id if len(rows) > limit else None)


def decide(mdb: ModerationDB, case_id: int, decision: str, note: str, moderator: str,
           request_id: str | None = None) -> Case:
    """Records ``moderator``'s ``decision`` (confirm, dismiss, escalate) on the
    case, its new state and a ``case.decided`` event, in one transaction. A
    decided case may be decided again (an escalated case is confirmed later)."""
    if decision not in DECISIONS:
        raise InputError(f"decision {decision!r}: use confirm, dismiss or escalate")
    if len(note) > NOTE_CHARS:
        raise InputError(f"the note has {len(note)} characters: at most {NOTE_CHARS}")
    with mdb.transaction() as db:
        if db.execute("SELECT 1 FROM cases WHERE id=?", (case_id,)).fetchone() is None:
            raise NotFoundError(f"no case {case_id}")
        now = time.time()
        db.execute("INSERT INTO decisions(case_id, at, moderator, decision, note, request_id) "
                   "VALUES(?, ?, ?, ?, ?, ?)", (case_id, now, moderator, decision, note, request_id))
        db.execute("UPDATE cases SET state=?, updated_at=? WHERE id=?", (DECISIONS[decision], now, case_id))
        events.enqueue(db, "case.decided", {"case": case_id, "decision": decision, "state": DECISIONS[decision]})
    return get_case(mdb, case_id)
