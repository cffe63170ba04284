"""The artist's page (an artist's session only): ``/artist`` lists their
works and the cases about their style (state, tier, kind and dates: never
the uploader, the upload's or model's ids, previews or moderators' notes);
``POST /artist/works`` uploads works (as ``POST /v1/artists/{name}/works``:
:meth:`StyleIndex.add_uploads`, all or none), ``POST
/artist/works/{id}/remove`` removes one, ``POST /artist/withdraw`` removes
the artist and every work, and ends the session."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mimicry.errors import ForbiddenError, InputError
from mimicry.faces.http import artist_writes
from mimicry.faces.http.context import Position, WorkId
from mimicry.faces.http.deps import check_images, read_files
from mimicry.faces.http.gate import request_id
from mimicry.faces.web import session as sessions
from mimicry.faces.web.pages import checked_form, need, page, redirect, render, service
from mimicry.images import ImageBytes
from mimicry.moderation import cases
from mimicry.registry import Actor

router = APIRouter(include_in_schema=False)
ARTIST = ("artist",)
#: Cases about the artist on one page.
CASES_PAGE = 100
#: What the page says after a write (by key; the count is a number only).
DONE = {"added": "Added {n} work{s}.", "removed": "Removed work #{n}."}


@router.get("/artist")
@page
def artist_page(request: Request, done: Annotated[str, Query(max_length=20)] = "",
                n: Annotated[int, Query(ge=0, le=10**9)] = 0, after: Position = 0) -> Response:
    """The artist's works (newest first) and the cases about their style,
    newest first, :data:`CASES_PAGE` at a time (older ones: below id ``after``)."""
    s = need(request, ARTIST)
    svc = service(request)
    works = sorted(svc.index.works(s.who.name), key=lambda w: -w.id)
    mdb = svc.moderation
    about, older = (cases.list_cases(mdb, artist=s.who.name, after=after, limit=CASES_PAGE, newest_first=True)
                    if mdb is not None else ([], None))
    # only what an artist may see of each case (never its key: the hub's upload or model id)
    shown = [{"id": c.id, "state": c.state, "tier": c.tier, "kind": c.kind, "opened_at": c.opened_at} for c in about]
    return render("artist.html.j2", s, works=works, cases=shown, older=older, paged=bool(after), writes=svc.writes,
                  done=DONE.get(done, "").format(n=n, s="" if n == 1 else "s"), limits=svc.settings)


async def _writer(request: Request, svc: Any) -> tuple[Actor, Any]:
    """The artist writing (a writable service, an artist's session) and their
    form, its CSRF token checked."""
    if not svc.writes:
        raise ForbiddenError("this service is read-only")
    s = need(request, ARTIST)
    form = await checked_form(request, s)
    return Actor("artist", s.who.name, request_id(request.headers.get("x-request-id"))), form


async def _images(form: Any, settings: Any) -> list[ImageBytes]:
    """The form's files, within the API's limits for ``POST /v1/artists/{name}/works``:
    files per request and bytes per file (413), type sniffed (415), pixels (422)."""
    # a browser sends an empty part when no file was chosen
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and (f.filename or f.size)]
    if not files:
        raise InputError("no files: choose one or more images to upload")
    return check_images(await read_files(files, settings), settings.max_pixels)


@router.post("/artist/works")
@page
async def upload(request: Request) -> Response:
    """Adds the uploaded works (all or none), then back to the page."""
    svc = service(request)
    actor, form = await _writer(request, svc)
    images = await _images(form, svc.settings)
    with svc.holding_images():  # the API's slots for requests holding images
        ids, _ = await run_in_threadpool(artist_writes.add_works, svc, actor.artist, images, actor)
    return redirect(f"/artist?done=added&n={len(ids)}")


@router.post("/artist/works/{work_id}/remove")
@page
async def remove(request: Request, work_id: WorkId) -> Response:
    """Removes one of the artist's works."""
    svc = service(request)
    actor, _ = await _writer(request, svc)
    await run_in_threadpool(artist_writes.remove_work, svc, actor.artist, work_id, actor)
    return redirect(f"/artist?done=removed&n={work_id}")


@router.post("/artist/withdraw")
@page
async def withdraw(request: Request) -> Response:
    """Removes the artist and all their works (the form must say so), and signs out."""
    svc = service(request)
    actor, form = await _writer(request, svc)
    if form.get("confirm") != "yes":
        raise InputError("to withdraw, tick the box that says you understand every work is removed")
    await run_in_threadpool(artist_writes.withdraw, svc, actor.artist, actor)
    out = redirect("/?note=withdrawn")
    out.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return out
