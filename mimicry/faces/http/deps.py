"""The routes' dependencies (FastAPI ``Depends``), in the order a request meets
them: the read-only check, who is asking (scan token; admin, artist or
anonymous writer), then the body, then an in-flight slot, then the uploads. Authorisation
always comes before the body is read, so nobody without a token makes the
server parse one."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, AsyncIterator

from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from mimicry.errors import (
    ForbiddenError,
    ImageError,
    InputError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
    quoted,
)
from mimicry.faces.http.context import Service
from mimicry.faces.http.gate import bearer, request_id, scan_token_error
from mimicry.images import ImageBytes, check_header, sniff_type
from mimicry.moderation.history import HubIds
from mimicry.registry import Actor
from mimicry.settings import Settings

#: The hub's ids a scan may carry (multipart fields beside ``files``), and their longest.
HUB_FIELDS = ("upload_id", "model_id", "uploader")
HUB_ID_CHARS = 200
#: How the case of a scan sent without a hub id is keyed (``scan:<scan id>``).
ANONYMOUS_KEY = "scan:"

async def service(request: Request) -> Service:
    """The app's :class:`Service`."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service)]


async def authorise_scan(request: Request, svc: ServiceDep) -> None:
    """With a scan token set, scans and reads need it (or the admin token):
    none is 401, another is 403 (:func:`.gate.scan_token_error`)."""
    denied = scan_token_error(request.headers, svc.settings, "scan")
    if denied is not None:
        raise denied


async def writable(svc: ServiceDep) -> None:
    """403 on a read-only service."""
    if not svc.writes:
        raise ForbiddenError("this service is read-only")


def identify(svc: Service, request: Request, artist: str | None) -> Actor:
    """Who is writing: the admin, or (for their own ``artist``) that artist;
    anyone on an ``insecure_no_auth`` service. Authorisation comes before
    existence: a token that may not act on an artist gets 403 whether or not
    the artist exists. The request id is the client's ``X-Request-ID`` when
    well formed, else a new one."""
    rid = request_id(request.headers.get("x-request-id"))
    if svc.insecure_no_auth:
        return Actor("anonymous", None, rid)
    given = bearer(request.headers)
    if given is None:
        raise UnauthorizedError("this write needs a token: Authorization: Bearer <token>")
    admin_token = svc.settings.admin_token
    if admin_token and hmac.compare_digest(given.encode(), admin_token.encode()):
        return Actor("admin", None, rid)
    if artist is not None and svc.index.artist_token_matches(artist, given):
        return Actor("artist", artist, rid)
    raise ForbiddenError("this token may not do this" + ("" if artist is None else f" for {quoted(artist)}"))


def artist_writer(name: str, request: Request, svc: ServiceDep) -> Actor:
    """The writer acting on artist ``name`` (the path's): that artist or the
    admin. A plain ``def``: the token check reads the index, on a worker thread."""
    return identify(svc, request, name)


async def admin(request: Request, svc: ServiceDep) -> Actor:
    """The admin (or anyone on an ``insecure_no_auth`` service); else 401/403."""
    actor = identify(svc, request, None)
    if actor.kind not in ("admin", "anonymous"):
        raise ForbiddenError("this needs the admin token")
    return actor


async def received_form(request: Request, svc: ServiceDep) -> FormData:
    """The request's multipart body, read whole before anything counts it as in
    flight (``MIMICRY_BODY_TIMEOUT`` bounds the wait: 408). While it is parsed:
    bytes per request (413, the app's middleware), non-file fields, their number
    and size (400)."""
    s = svc.settings
    try:
        return await request.form(max_files=s.request_files + 1, max_fields=s.form_fields,
                                  max_part_size=s.form_field_bytes)
    except MultiPartException as exc:
        raise InputError("unreadable multipart body (" + exc.message + ")") from None


Form = Annotated[FormData, Depends(received_form)]


async def hub_ids(form: Form) -> HubIds:
    """The hub's ids of a scan: the form fields ``upload_id``, ``model_id`` and
    ``uploader``, each at most once, 1 to :data:`HUB_ID_CHARS` printable
    characters (an empty field is no field), and an upload or model id not
    starting with ``scan:`` (the key of a scan's own case); anything else is a
    400 naming the field, before any image is read."""
    got: dict[str, str | None] = {}
    for name in HUB_FIELDS:
        values = form.getlist(name)
        if len(values) > 1:
            raise InputError(f"form field {name!r}: sent {len(values)} times; send it once")
        value = values[0] if values else None
        if value is not None and not isinstance(value, str):
            raise InputError(f"form field {name!r}: expected text, not a file")
        if value and (len(value) > HUB_ID_CHARS or not value.isprintable()):
            raise InputError(f"form field {name!r}: 1 to {HUB_ID_CHARS} printable characters, "
                             f"got {quoted(value)}")
        if value and name != "uploader" and value.startswith(ANONYMOUS_KEY):
            # a scan without an id is its own case, keyed "scan:<id>": a hub's id may not look like one
            raise InputError(f"form field {name!r}: may not start with {ANONYMOUS_KEY!r}, got {quoted(value)}")
        got[name] = value or None
    return HubIds(**got)


async def inflight_slot(svc: ServiceDep, _body: Form) -> AsyncIterator[None]:
    """One of the ``MIMICRY_INFLIGHT`` slots for a request holding images, taken
    once its body has arrived (none free: 503 with ``Retry-After``), held until
    the response is sent and given back however the request ends, errors included."""
    with svc.holding_images():
        yield


async def _files(form: FormData, s: Settings) -> list[ImageBytes]:
    """The form's files (field ``files``) as :class:`ImageBytes`: files per
    request (413), then bytes per file (413)."""
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise InputError("no files: send images in the multipart field 'files'")
    return await read_files(files, s)


async def read_files(files: list[UploadFile], s: Settings) -> list[ImageBytes]:
    """``files`` as :class:`ImageBytes` (their names labels, never paths):
    files per request (413), then bytes per file (413)."""
    if len(files) > s.request_files:
        raise PayloadTooLargeError(f"{len(files)} files, above the {s.request_files}-file limit")
    out = []
    for i, f in enumerate(files):
        name = (Path(f.filename or f"upload-{i}").name or f"upload-{i}")[:200]  # a label, never a path
        data = await f.read(s.upload_bytes + 1)
        if len(data) > s.upload_bytes:
            raise PayloadTooLargeError(f"{name}: above the {s.upload_bytes}-byte limit per file")
        out.append(ImageBytes(name, data))
    return out


def unreadable(item: ImageBytes, max_pixels: int) -> ImageError | None:
    """Why ``item`` cannot be scanned, found before decoding it: its type
    sniffed from the bytes, its pixels from the header; None when it may be decoded."""
    if sniff_type(item.data) is None:
        return ImageError(item.name, "not an image type mimicry reads (JPEG, PNG, GIF, WebP, BMP, TIFF)")
    try:
        check_header(item, max_pixels)
    except ImageError as exc:
        return exc
    return None


async def uploads(svc: ServiceDep, form: Form, _slot: Annotated[None, Depends(inflight_slot)]
                  ) -> list[ImageBytes]:
    """The request's files as :class:`ImageBytes`, after every limit but the
    decode, in this order: the body's (:func:`received_form`), then files per
    request (413), bytes per file (413), type sniffed from the bytes (415),
    pixels from the image header (422): any file failing fails the request.
    Routes list it after their authorisation."""
    return check_images(await _files(form, svc.settings), svc.settings.max_pixels)


def check_images(items: list[ImageBytes], max_pixels: int) -> list[ImageBytes]:
    """``items`` when every one may be decoded: type sniffed from the bytes
    (415), then pixels from the header (422); any failing fails them all."""
    for item in items:
        if sniff_type(item.data) is None:
            raise UnsupportedMediaError(f"{item.name}: not an image type mimicry reads "
                                        f"(JPEG, PNG, GIF, WebP, BMP, TIFF)")
    for item in items:
        check_header(item, max_pixels)
    return items


async def scan_uploads(svc: ServiceDep, form: Form, _slot: Annotated[None, Depends(inflight_slot)]
                       ) -> list[tuple[ImageBytes, ImageError | None]]:
    """:func:`uploads` for ``/v1/scan``, where a file of the wrong type or too
    many pixels is reported, not fatal: each file with why it cannot be
    scanned (None when it can)."""
    return [(item, unreadable(item, svc.settings.max_pixels)) for item in await _files(form, svc.settings)]


ScanAllowed = Depends(authorise_scan)
Hub = Annotated[HubIds, Depends(hub_ids)]
Writable = Depends(writable)
Admin = Annotated[Actor, Depends(admin)]
ArtistWriter = Annotated[Actor, Depends(artist_writer)]
Uploads = Annotated[list[ImageBytes], Depends(uploads)]
ScanUploads = Annotated[list[tuple[ImageBytes, ImageError | None]], Depends(scan_uploads)]
