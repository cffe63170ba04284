"""The pictures the pages show, behind the same session as the pages:
``/cases/{id}/images/{position}`` (the recorded preview of an upload's image
or a model's sample: moderators and the admin), ``/works/{id}/image`` (a
registered work at :data:`~.pages.LARGE_SIDE` pixels) and
``/works/{id}/thumb`` (at the service's thumbnail side): moderators and the
admin see every work, an artist their own only."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mimicry.errors import ForbiddenError, NotFoundError
from mimicry.images import sniff_type
from mimicry.faces.http.context import WorkId
from mimicry.faces.web.cases import CaseId
from mimicry.faces.web.pages import MODERATING, moderation, need, page, service, web
from mimicry.moderation.evidence import case_evidence

router = APIRouter(include_in_schema=False)

#: Pictures are private to the signed-in user: kept by their browser, never by a shared cache.
CACHE = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


@router.get("/cases/{case_id}/images/{position}")
@page
def preview(request: Request, case_id: CaseId, position: WorkId) -> Response:
    """The recorded preview of image ``position`` of the scan behind the case."""
    need(request, MODERATING)
    mdb = moderation(request)
    path = case_evidence(mdb, case_id).preview_path(mdb.folder, position)
    if path is None:
        raise NotFoundError(f"case {case_id} has no recorded image {position}")
    try:
        data = path.read_bytes()
    except OSError:
        raise NotFoundError(f"the preview of image {position} of case {case_id} is gone") from None
    return Response(data, media_type=sniff_type(data) or "application/octet-stream", headers=CACHE)


def _work_picture(request: Request, work_id: int, large: bool) -> Response:
    s = need(request, (*MODERATING, "artist"))
    svc = service(request)
    work = svc.index.snapshot().works.get(work_id)
    if work is None:
        raise NotFoundError(f"no work {work_id}")
    if s.who.role == "artist" and work.artist != s.who.name:
        raise ForbiddenError(f"work {work_id} is not yours")
    thumbs = web(request).large if large else svc.thumbs
    return Response(thumbs.of_work(work), media_type="image/jpeg", headers=CACHE)


@router.get("/works/{work_id}/image")
@page
def work_image(request: Request, work_id: WorkId) -> Response:
    """A registered work, large enough to compare brushwork."""
    return _work_picture(request, work_id, True)


@router.get("/works/{work_id}/thumb")
@page
def work_thumb(request: Request, work_id: WorkId) -> Response:
    """A registered work, small (the artist page's grid)."""
    return _work_picture(request, work_id, False)
