"""The admin's side of moderation: moderators (``POST /v1/moderators``
``{"name"}`` answers ``{"name", "token"}`` once; ``GET /v1/moderators``;
``DELETE /v1/moderators/{name}``) and the history's purge of one uploader
(``DELETE /v1/history?uploader=U``). Admin token only: a moderator's or an
artist's is 403. Each is an entry of the audit log
(:mod:`mimicry.moderation.audited`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from mimicry.errors import InputError
from mimicry.faces.http.deps import Admin, ServiceDep
from mimicry.faces.http.identity import Moderation
from mimicry.moderation import audited, moderators
from mimicry.results import iso_utc

router = APIRouter()


class ModeratorIn(BaseModel):
    """The body of ``POST /v1/moderators``."""

    name: str


@router.post("/v1/moderators", status_code=201)
async def add(request: Request, actor: Admin, mdb: Moderation, svc: ServiceDep) -> dict[str, str]:
    """Adds a moderator (admin; JSON ``{"name"}``); the token is in this answer only."""
    try:
        body = ModeratorIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InputError("expected a JSON body with a name (" + exc.errors()[0]["msg"] + ")") from None
    token = await run_in_threadpool(audited.add_moderator, svc.index, mdb, body.name, actor,
                                    svc.settings.write_wait_s)
    return {"name": body.name, "token": token}


@router.get("/v1/moderators")
def listed(actor: Admin, mdb: Moderation) -> dict[str, Any]:
    """The moderators (admin): names and when each was added (UTC ISO 8601)."""
    return {"moderators": [{"name": m.name, "added_at": iso_utc(m.added_at)} for m in moderators.listed(mdb)]}


@router.delete("/v1/moderators/{name}")
async def revoke(name: str, actor: Admin, mdb: Moderation, svc: ServiceDep) -> dict[str, Any]:
    """Revokes a moderator (admin): their token stops working at once."""
    await run_in_threadpool(audited.revoke_moderator, svc.index, mdb, name, actor, svc.settings.write_wait_s)
    return {"name": name, "revoked": True}


@router.delete("/v1/history")
async def purge(actor: Admin, mdb: Moderation, svc: ServiceDep,
                uploader: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
    """Removes everything recorded of one uploader (admin): their scans, the
    images' vectors and previews, and the cases and decisions those scans
    opened; answers how many scans went."""
    n = await run_in_threadpool(audited.purge_uploader, svc.index, mdb, uploader, actor, svc.settings.write_wait_s)
    return {"uploader": uploader, "removed": n}
