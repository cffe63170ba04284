"""Cases: ``GET /v1/cases`` (the queue, with filters), ``GET /v1/cases/{id}``
(the evidence as the report shows it), ``GET /v1/cases/{id}/images/{position}``
(an image's preview) and ``POST /v1/cases/{id}/decision`` (confirm, dismiss
or escalate; moderator or admin; an entry of the audit log too).

Who reads what: the admin and moderators every case; an artist only the
cases about them (among the case's artists), without the hub's ids, the
uploaded files' names, or the moderators' names and notes
(:func:`mimicry.moderation.evidence.for_artist`). An artist asking for a case
about someone else gets 404, as for a case that does not exist: the answer
says nothing about which cases exist. An artist filtering the queue by
another artist gets 403: that is a question their token may never ask.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from mimicry.errors import ForbiddenError, InputError, NotFoundError, quoted
from mimicry.faces.http.context import INT_MAX, Count, Position, Service
from mimicry.faces.http.deps import ServiceDep
from mimicry.faces.http.gate import request_id
from mimicry.faces.http.identity import Identity, Moderating, Moderation, SignedIn
from mimicry.images import sniff_type
from mimicry.moderation import audited, cases, evidence
from mimicry.moderation.cases import Case
from mimicry.registry import Actor
from mimicry.results import iso_utc

router = APIRouter()

#: Most cases in one answer of ``GET /v1/cases``.
CASES_PAGE = 500
CaseId = Annotated[int, PathParam(ge=0, le=INT_MAX)]
ImagePosition = Annotated[int, PathParam(ge=0, le=INT_MAX)]
Instant = Annotated[str | None, Query(max_length=64)]
Text = Annotated[str | None, Query(max_length=200)]


class DecisionIn(BaseModel):
    """The body of ``POST /v1/cases/{id}/decision``."""

    decision: str
    note: str = Field(default="", max_length=cases.NOTE_CHARS)


def instant(name: str, value: str | None) -> float | None:
    """A time filter: Unix seconds, or ISO 8601 (UTC when no offset is given); a 400 naming ``name`` else."""
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InputError(f"{name} {quoted(value)}: use ISO 8601 (2026-05-01T12:00:00Z) or Unix seconds") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t):
        raise InputError(f"{name} {quoted(value)}: not a time")
    return t


def case_dict(case: Case, who: Identity) -> dict[str, Any]:
    """A case as ``who`` may read it; times in UTC ISO 8601."""
    d: dict[str, Any] = {"id": case.id, "kind": case.kind, "state": case.state, "tier": case.tier,
                         "artist": case.artist, "artists": list(case.artists), "source": case.source,
                         "opened_at": iso_utc(case.opened_at), "updated_at": iso_utc(case.updated_at)}
    if who.moderates:
        d |= {"key": case.key, "scan": case.scan_id,
              "decisions": [{"at": iso_utc(x.at), "moderator": x.moderator, "decision": x.decision,
                             "note": x.note} for x in case.decisions]}
    else:
        d["decisions"] = [{"at": iso_utc(x.at), "decision": x.decision} for x in case.decisions]
    return d


def _about(case: Case, who: Identity) -> bool:
    return who.moderates or (who.role == "artist" and who.name in case.artists)


def _thumbnails(obj: Any, on: bool) -> Any:
    """Every work named as evidence (a mapping with ``work_id``) with its thumbnail's URL, in place."""
    if isinstance(obj, dict):
        if on and isinstance(obj.get("work_id"), int):
            obj["thumbnail"] = f"/v1/works/{obj['work_id']}/thumbnail"
        for v in obj.values():
            _thumbnails(v, on)
    elif isinstance(obj, list):
        for v in obj:
            _thumbnails(v, on)
    return obj


def _evidence(svc: Service, mdb: Any, case_id: int, who: Identity) -> evidence.CaseEvidence:
    """The case's evidence as ``who`` may read it (404 when they may not read it at all)."""
    ev = evidence.case_evidence(mdb, case_id)
    if not _about(ev.case, who):
        raise NotFoundError(f"no case {case_id}")
    return ev if who.moderates else evidence.for_artist(ev)


@router.get("/v1/cases")
def list_cases(who: SignedIn, mdb: Moderation, svc: ServiceDep, state: Text = None, artist: Text = None,
               tier: Text = None, since: Instant = None, until: Instant = None, after: Position = 0,
               limit: Count = 50) -> dict[str, Any]:
    """Cases oldest first from id ``after``, at most ``limit`` (and ``CASES_PAGE``):
    ``state`` (open, confirmed, dismissed, escalated), ``artist`` (among the
    case's), ``tier`` (flagged, imitates, review), opened ``since`` / ``until``
    (ISO 8601 or Unix seconds); ``next`` is the ``after`` of the next page (null: none)."""
    if not who.moderates:
        if artist is not None and artist != who.name:
            raise ForbiddenError(f"an artist's token reads only the cases about them, not {quoted(artist)}")
        artist = who.name
    found, nxt = cases.list_cases(mdb, state, artist, tier, instant("since", since), instant("until", until),
                                  after, max(1, min(limit, CASES_PAGE)))
    return {"cases": [case_dict(c, who) for c in found], "next": nxt}


@router.get("/v1/cases/{case_id}")
def get_case(case_id: CaseId, who: SignedIn, mdb: Moderation, svc: ServiceDep) -> dict[str, Any]:
    """The case and its evidence, as the report shows it: the recorded result
    (``scan.result``: what the scan answered, each evidence work with its
    ``thumbnail`` URL) and each recorded image with its ``preview`` URL."""
    ev = _evidence(svc, mdb, case_id, who)
    scan: dict[str, Any] = {"at": iso_utc(ev.at), "kind": ev.kind, "tier": ev.tier,
                            "result": _thumbnails(ev.result, bool(svc.settings.thumbnails))}
    if who.moderates:
        scan |= {"id": ev.scan_id, "upload_id": ev.upload_id, "model_id": ev.model_id, "uploader": ev.uploader,
                 "request_id": ev.request_id}
    scan["images"] = [{"position": i.position, "name": i.name, "tier": i.tier, "artist": i.artist,
                       "preview": None if i.preview is None else f"/v1/cases/{case_id}/images/{i.position}"}
                      | ({"sha256": i.sha256} if who.moderates else {}) for i in ev.images]
    return case_dict(ev.case, who) | {"scan": scan}


@router.get("/v1/cases/{case_id}/images/{position}")
def case_image(case_id: CaseId, position: ImagePosition, who: SignedIn, mdb: Moderation, svc: ServiceDep) -> Response:
    """The preview of the case's image ``position`` (at most ``MIMICRY_PREVIEW_SIDE`` px on its long
    side: a JPEG, or a PNG upload already that small without its metadata)."""
    ev = _evidence(svc, mdb, case_id, who)
    path = ev.preview_path(svc.index.folder, position)
    try:
        data = path.read_bytes() if path is not None else None
    except OSError:
        data = None
    if data is None:
        raise NotFoundError(f"case {case_id} has no preview of image {position}")
    return Response(data, media_type=sniff_type(data) or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.post("/v1/cases/{case_id}/decision")
async def decide(case_id: CaseId, request: Request, who: Moderating, mdb: Moderation,
                 svc: ServiceDep) -> dict[str, Any]:
    """Decides the case (moderator or admin; JSON ``{"decision": "confirm" |
    "dismiss" | "escalate", "note"}``); answers the case as it is now. The
    decision is also an entry of the audit log (``GET /v1/audit``)."""
    try:
        body = DecisionIn.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        raise InputError(f"expected a JSON body with a decision and an optional note ({where}: "
                         f"{first['msg']})") from None
    actor = Actor(who.role, None,
                  request_id(request.headers.get("x-request-id")))
    case = await run_in_threadpool(audited.decide, svc.index, mdb, case_id, body.decision, body.note, actor,
                                   who.actor, svc.settings.write_wait_s)
    return case_dict(case, who)
