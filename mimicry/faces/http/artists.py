"""Artists and their works: the registry's reads (scan token) and writes
(admin token, or the artist's own for their works and withdrawal), and
thumbnails of registered works. Every write waits at most ``write_wait_s``
for the index lock, then answers 503 with ``Retry-After``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from mimicry.errors import InputError, NotFoundError, quoted
from mimicry.faces.http import artist_writes
from mimicry.faces.http.context import WorkId
from mimicry.faces.http.deps import Admin, ArtistWriter, ScanAllowed, ServiceDep, Uploads, Writable
from mimicry.faces.http.webhooks import announce
from mimicry.faces.http.lookbacks import after_change

router = APIRouter()


class ArtistIn(BaseModel):
    """The body of ``POST /v1/artists``."""

    name: str


# -- reads --------------------------------------------------------------------
@router.get("/v1/artists", dependencies=[ScanAllowed])
def artists(svc: ServiceDep) -> dict[str, Any]:
    """Registered artists with their work counts, and the calibration state."""
    info = svc.index.info()
    return {"artists": [{"name": a, "works": n} for a, n in info.artists.items()],
            "calibration": info.calibration}


@router.get("/v1/artists/{name}", dependencies=[ScanAllowed])
def artist(name: str, svc: ServiceDep) -> dict[str, Any]:
    """One artist: work count and whether the calibration covers them."""
    info = svc.index.info()
    if name not in info.artists:
        raise NotFoundError(f"no artist {quoted(name)} is registered")
    cal = svc.index.calibration
    covered = cal is not None and name in cal.artists
    return {"name": name, "works": info.artists[name],
            "calibration": info.calibration if covered else "uncalibrated"}


@router.get("/v1/works/{work_id}/thumbnail", dependencies=[ScanAllowed])
def thumbnail(work_id: WorkId, svc: ServiceDep) -> Response:
    """A small JPEG of a registered work (``thumbnail_side`` pixels on its long
    side at most), so a moderator can see the evidence (off with ``MIMICRY_THUMBNAILS=0``)."""
    if not svc.settings.thumbnails:
        raise NotFoundError("thumbnails are turned off on this service")
    work = svc.index.snapshot().works.get(work_id)
    if work is None:
        raise NotFoundError(f"no work {work_id}")
    return Response(svc.thumbs.of_work(work), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


# -- writes -------------------------------------------------------------------
@router.post("/v1/artists", status_code=201, dependencies=[Writable])
async def register(request: Request, actor: Admin, svc: ServiceDep) -> dict[str, Any]:
    """Registers an artist (admin; JSON body with a name); the token is in this
    answer only, with the id of the lookback started for them (null when off).
    Its ``artist.registered`` event is committed before the answer (or, should
    that fail, by the delivery worker from the audit log)."""
    try:
        body = ArtistIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InputError("expected a JSON body with a name (" + exc.errors()[0]["msg"] + ")") from None
    token = await run_in_threadpool(svc.index.register_artist, body.name, actor, svc.settings.write_wait_s)
    await run_in_threadpool(announce, svc)
    return {"name": body.name, "token": token, "lookback": await run_in_threadpool(after_change, svc, body.name)}


@router.post("/v1/artists/{name}/token", dependencies=[Writable])
async def rotate(name: str, actor: Admin, svc: ServiceDep) -> dict[str, str]:
    """A new token for the artist (admin); the old one stops working."""
    token = await run_in_threadpool(svc.index.rotate_token, name, actor, svc.settings.write_wait_s)
    return {"name": name, "token": token}


@router.post("/v1/artists/{name}/works", status_code=201, dependencies=[Writable])
async def add_works(name: str, actor: ArtistWriter, images: Uploads, svc: ServiceDep) -> dict[str, Any]:
    """Adds works to the artist (their token or the admin's); answers their ids
    and the id of the lookback started for the artist (null when off)."""
    ids, lookback = await run_in_threadpool(artist_writes.add_works, svc, name, images, actor)
    return {"artist": name, "works": ids, "lookback": lookback}


@router.delete("/v1/artists/{name}/works/{work_id}", dependencies=[Writable])
async def remove_work(name: str, work_id: WorkId, actor: ArtistWriter, svc: ServiceDep) -> dict[str, Any]:
    """Removes one of the artist's works (their token or the admin's)."""
    await run_in_threadpool(artist_writes.remove_work, svc, name, work_id, actor)
    return {"artist": name, "removed": work_id}


@router.delete("/v1/artists/{name}", dependencies=[Writable])
async def withdraw(name: str, actor: ArtistWriter, svc: ServiceDep) -> dict[str, Any]:
    """Removes the artist and all their works (the artist themself, or the admin)."""
    n = await run_in_threadpool(artist_writes.withdraw, svc, name, actor)
    return {"artist": name, "removed": n}
