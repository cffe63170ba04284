"""The moderators' pages (a moderator or the admin): ``/cases``, the queue
(filters: state, artist, tier; each case's tier and age), ``/cases/{id}``, a
case (the upload beside its nearest works, the verdict's words, the decisions
so far and the decision buttons), and ``POST /cases/{id}/decision``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mimicry.errors import InputError
from mimicry.faces.http.context import INT_MAX, Position
from mimicry.faces.http.gate import request_id
from mimicry.faces.web.evidence import case_view
from mimicry.faces.web.pages import MODERATING, checked_form, need, page, redirect, render, service, moderation
from mimicry.faces.web.session import Who
from mimicry.moderation import cases
from mimicry.moderation.cases import DECISIONS, STATES, TIER_RANK
from mimicry.moderation.evidence import case_evidence

router = APIRouter(include_in_schema=False)

CaseId = Annotated[int, Path(ge=0, le=INT_MAX)]
#: Cases per page of the queue.
PAGE = 50
#: What the case page says after a decision (by key: no text from the URL is shown).
DONE = {"confirm": "Confirmed.", "dismiss": "Dismissed.", "escalate": "Escalated."}


def _filters(state: str, artist: str, tier: str) -> tuple[str | None, str | None, str | None]:
    if state not in (*STATES, "all"):
        raise InputError(f"state {state[:40]!r}: use all, {', '.join(STATES)}")
    return (None if state == "all" else state), (artist.strip() or None), (tier or None)


@router.get("/cases")
@page
def queue(request: Request, state: Annotated[str, Query(max_length=20)] = "open",
          artist: Annotated[str, Query(max_length=100)] = "", tier: Annotated[str, Query(max_length=20)] = "",
          after: Position = 0) -> Response:
    """The queue: cases matching the filters, oldest first, a page at a time."""
    s = need(request, MODERATING)
    st, who, tr = _filters(state, artist, tier)
    found, nxt = cases.list_cases(moderation(request), st, who, tr, after=after, limit=PAGE)
    query = {"state": state, "artist": artist, "tier": tier}
    return render("cases.html.j2", s, cases=found, next=nxt, query=query, states=("all", *STATES),
                  tiers=tuple(TIER_RANK), artists=sorted(service(request).index.info().artists))


@router.get("/cases/{case_id}")
@page
def case_page(request: Request, case_id: CaseId, done: Annotated[str, Query(max_length=20)] = "") -> Response:
    """One case: its evidence from the scan behind it, its decisions, and the
    decision form."""
    s = need(request, MODERATING)
    mdb = moderation(request)
    ev = case_evidence(mdb, case_id)
    view = case_view(ev, service(request).index.snapshot().works)
    return render("case.html.j2", s, case=ev.case, view=view, done=DONE.get(done, ""))


def decide_and_audit(svc: Any, mdb: Any, case_id: int, decision: str, note: str, who: Who, rid: str) -> None:
    """Records the decision and its entry in the index's audit log exactly as
    ``POST /v1/cases/{id}/decision`` does (:func:`mimicry.moderation.audited.decide`)."""
    from mimicry.moderation import audited
    from mimicry.registry import Actor

    audited.decide(svc.index, mdb, case_id, decision, note, Actor(who.role, None, rid), who.name,
                   svc.settings.write_wait_s)


@router.post("/cases/{case_id}/decision")
@page
async def decide(request: Request, case_id: CaseId) -> Response:
    """Confirms, dismisses or escalates the case, with a note; back to the case."""
    s = need(request, MODERATING)
    form = await checked_form(request, s)
    decision, note = str(form.get("decision") or ""), str(form.get("note") or "").strip()
    if decision not in DECISIONS:
        raise InputError(f"decision {decision[:40]!r}: use confirm, dismiss or escalate")
    rid = request_id(request.headers.get("x-request-id"))
    await run_in_threadpool(decide_and_audit, service(request), moderation(request), case_id, decision,
                            note, s.who, rid)
    return redirect(f"/cases/{case_id}?done={decision}")
