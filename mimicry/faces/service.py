"""The HTTP service: a FastAPI app over :class:`mimicry.StyleIndex`, no logic of its own.

Built by :func:`create_app` (tests use the factory; ``mimicry serve`` runs it
under uvicorn). Every error is ``{"error": {"code", "message"}}`` with the code
and HTTP status of its :class:`~mimicry.errors.MimicryError`. Uploads are
checked in this order before anything is decoded: bytes per request and per
file (413), files per request (413), type sniffed from the bytes (415), pixels
from the image header (422). Inference runs on a worker thread, off the event
loop; reads answer from the index's last committed snapshot.
"""

from __future__ import annotations

import hmac
import os
import re
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.concurrency import run_in_threadpool

from mimicry import __version__
from mimicry.errors import (
    BusyError,
    ForbiddenError,
    ImageError,
    InputError,
    MimicryError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from mimicry.images import ImageBytes, check_header, sniff_type
from mimicry.index import StyleIndex
from mimicry.registry import Actor
from mimicry.settings import Settings, get_settings


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self, ix: StyleIndex) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mimicry_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("mimicry_request_seconds", "Request latency by route", ["route"],
                                 registry=self.registry)
        self.scanned = Counter("mimicry_images_scanned", "Images scanned (samples included)",
                               registry=self.registry)
        self.flags = Counter("mimicry_flags_raised", "Images flagged and models given a verdict",
                             registry=self.registry)
        artists = Gauge("mimicry_artists", "Registered artists", registry=self.registry)
        works = Gauge("mimicry_works", "Registered works", registry=self.registry)
        artists.set_function(lambda: len(ix.snapshot().artist_counts))
        works.set_function(lambda: len(ix.snapshot().work_ids))


class ArtistIn(BaseModel):
    """The body of ``POST /v1/artists``."""

    name: str


class _LimitBody:
    """ASGI middleware: refuses a request whose body passes ``limit`` bytes (413),
    counting as it streams, before the multipart parser stores it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error_response(PayloadTooLargeError(
                f"request of {int(declared)} bytes is above the {self.limit}-byte limit"))(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLargeError(f"request is above the {self.limit}-byte limit")
            return message

        await self.app(scope, counted, send)


def wants_html(request: Request) -> bool:
    """Whether the client asks for the HTML report (``Accept: text/html`` before
    any JSON type); JSON stays the default."""
    accept = request.headers.get("accept", "").lower()
    html, json_ = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json_ < 0 or html < json_)


#: OpenAPI note on the endpoints that can answer with a report.
HTML_TOO = {200: {"content": {"text/html": {}},
                  "description": "JSON; with `Accept: text/html`, the self-contained HTML report."}}


def _error_response(exc: MimicryError, folder: Path | None = None) -> JSONResponse:
    """The error body; the index folder's path never leaves the server."""
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    body = exc.to_dict()
    if folder is not None:
        body["message"] = body["message"].replace(str(folder), "index")
    return JSONResponse({"error": body}, status_code=exc.http_status, headers=headers)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


#: Seconds a service write waits for the index lock before answering 503.
WRITE_WAIT_S = 1.0


def thumbnail_jpeg(path: Path, side: int = 256) -> bytes:
    """The image at ``path`` as a JPEG at most ``side`` pixels on its long side."""
    import io

    from mimicry.images import load_image

    img = load_image(path, draft_size=side)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def create_app(index: str | Path | StyleIndex, settings: Optional[Settings] = None,
               writes: bool = True, insecure_no_auth: bool = False,
               inference_slots: int | None = None) -> FastAPI:
    """The service over the index at ``index`` (or an open :class:`StyleIndex`),
    with ``settings`` (default: from the environment).

    With ``writes`` (artists register, upload and withdraw works), an admin
    token is required: without ``MIMICRY_ADMIN_TOKEN`` the app refuses to be
    built unless ``insecure_no_auth`` (then every write is allowed: for a
    loopback-only service). ``inference_slots``: model calls at once (default:
    the number of cores; ``mimicry serve`` also gives each call one core)."""
    settings = settings or get_settings()
    if writes and not settings.admin_token and not insecure_no_auth:
        raise InputError("refusing to serve writes without MIMICRY_ADMIN_TOKEN: set it, serve "
                         "--read-only, or --insecure-no-auth (loopback only)")
    ix = index if isinstance(index, StyleIndex) else StyleIndex.open(index, device=settings.device)
    # An upload that makes the approximate index due returns when its commit
    # lands; the index is rebuilt on a thread of its own (minutes at 1M works).
    ix.store.ann_in_background = True
    app = FastAPI(title="mimicry", version=__version__,
                  description="Screen images and fine-tuned models for imitation of registered artists.")
    app.state.index = ix
    app.state.settings = settings
    metrics = _Metrics(ix)
    slots = threading.Semaphore(inference_slots or os.cpu_count() or 1)

    def infer(fn: Any, *args: Any) -> Any:
        """A model call on this worker thread, at most ``inference_slots`` at once."""
        with slots:
            return fn(*args)
    app.add_middleware(_LimitBody, limit=settings.request_bytes)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            if getattr(request.state, "holds_slot", False):
                inflight.release()
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text: requests by route and status, latency, images scanned,
        flags raised, artists and works."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(MimicryError)
    async def _mimicry_error(request: Request, exc: MimicryError) -> JSONResponse:
        return _error_response(exc, ix.folder)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(InputError("invalid request: " + str(exc.errors()[0].get("msg", exc))))

    def authorise_scan(request: Request) -> None:
        """With a scan token set, scans and reads need it (or the admin token)."""
        if settings.scan_token is None:
            return
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise UnauthorizedError("this service needs a token: Authorization: Bearer <token>")
        given = header[7:].strip().encode()
        ok = [t for t in (settings.scan_token, settings.admin_token) if t]
        if not any(hmac.compare_digest(given, t.encode()) for t in ok):
            raise ForbiddenError("this token may not scan here")

    inflight = threading.BoundedSemaphore(settings.inflight)
    app.state.inflight = inflight

    async def uploads(request: Request) -> list[ImageBytes]:
        """The request's files (multipart field ``files``) as :class:`ImageBytes`,
        after every limit but the decode. Called after authorisation, so nobody
        without a token makes the server read a body; at most ``inflight``
        requests hold images in memory at once (more answer 503)."""
        if not inflight.acquire(blocking=False):
            raise BusyError(f"{settings.inflight} requests with images are in flight; try again shortly",
                            retry_after=settings.retry_after_s)
        request.state.holds_slot = True
        try:
            form = await request.form(max_files=settings.request_files + 1, max_fields=16,
                                      max_part_size=1024 * 1024)
        except MultiPartException as exc:
            raise InputError("unreadable multipart body (" + exc.message + ")") from None
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise InputError("no files: send images in the multipart field 'files'")
        if len(files) > settings.request_files:
            raise PayloadTooLargeError(f"{len(files)} files, above the {settings.request_files}-file limit")
        out = []
        for i, f in enumerate(files):
            name = Path(f.filename or f"upload-{i}").name or f"upload-{i}"  # a label, never a path
            data = await f.read(settings.upload_bytes + 1)
            if len(data) > settings.upload_bytes:
                raise PayloadTooLargeError(f"{name}: above the {settings.upload_bytes}-byte limit per file")
            out.append(ImageBytes(name, data))
        for item in out:
            if sniff_type(item.data) is None:
                raise UnsupportedMediaError(f"{item.name}: not an image type mimicry reads "
                                            f"(JPEG, PNG, GIF, WebP, BMP, TIFF)")
        for item in out:
            check_header(item, settings.max_pixels)
        return out

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Index loaded: backbone, recipe, counts, calibration."""
        info = ix.info()
        return {"status": "ok", "version": __version__, "backbone": info.backbone_id,
                "recipe": info.recipe, "artists": len(info.artists), "works": info.works,
                "calibration": info.calibration, "promise": info.promise}

    @app.post("/v1/scan", response_model=None, responses=HTML_TOO)
    async def scan(request: Request) -> dict[str, Any] | HTMLResponse:
        """Scans one or more images (multipart field ``files``, repeatable):
        per image what ``mimicry scan --json`` prints, evidence without paths;
        with ``Accept: text/html``, the HTML report instead (work thumbnails
        only when the service shows thumbnails)."""
        authorise_scan(request)
        images = await uploads(request)
        results = await run_in_threadpool(infer, ix.scan, images)
        metrics.scanned.inc(len(results))
        metrics.flags.inc(sum(r.artist is not None for r in results))
        if wants_html(request):
            from mimicry.report import scan_report

            return HTMLResponse(await run_in_threadpool(
                scan_report, results, ix.info(), f"POST /v1/scan ({len(images)} images)", images,
                settings.thumbnails, False))
        return {"results": [r.to_dict(paths=False) for r in results]}

    @app.post("/v1/scan-model", response_model=None, responses=HTML_TOO)
    async def scan_model(request: Request) -> dict[str, Any] | HTMLResponse:
        """The model-level verdict on 8-200 samples of one model, as ``mimicry scan-model --json``;
        with ``Accept: text/html``, the HTML report instead."""
        authorise_scan(request)
        images = await uploads(request)
        if not settings.min_samples <= len(images) <= settings.max_samples:
            raise InputError(f"{len(images)} samples: send {settings.min_samples} to "
                             f"{settings.max_samples} samples of one model")
        verdict = await run_in_threadpool(infer, ix.scan_model, images)
        metrics.scanned.inc(verdict.n_samples)
        metrics.flags.inc(bool(verdict.artists))
        if wants_html(request):
            from mimicry.report import model_report

            return HTMLResponse(await run_in_threadpool(
                model_report, verdict, ix.info(), f"POST /v1/scan-model ({len(images)} samples)", images,
                settings.thumbnails, False))
        return verdict.to_dict(paths=False)

    @app.get("/v1/artists")
    def artists(request: Request) -> dict[str, Any]:
        """Registered artists with their work counts, and the calibration state."""
        authorise_scan(request)
        info = ix.info()
        return {"artists": [{"name": a, "works": n} for a, n in info.artists.items()],
                "calibration": info.calibration}

    def caller(request: Request, artist: str | None) -> Actor:
        """Who is writing: the admin, or (for their own ``artist``) that artist.
        Authorisation comes before existence: a token that may not act on an
        artist gets 403 whether or not the artist exists."""
        rid = request.headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        if insecure_no_auth:
            return Actor("anonymous", None, rid)
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise UnauthorizedError("this write needs a token: Authorization: Bearer <token>")
        given = header[7:].strip()
        if settings.admin_token and hmac.compare_digest(given.encode(), settings.admin_token.encode()):
            return Actor("admin", None, rid)
        if artist is not None and ix.artist_token_matches(artist, given):
            return Actor("artist", artist, rid)
        raise ForbiddenError("this token may not do this" + ("" if artist is None else f" for {artist!r}"))

    def admin(request: Request) -> Actor:
        actor = caller(request, None)
        if actor.kind not in ("admin", "anonymous"):
            raise ForbiddenError("this needs the admin token")
        return actor

    def writable() -> None:
        if not writes:
            raise ForbiddenError("this service is read-only")

    @app.post("/v1/artists", status_code=201)
    async def register(request: Request) -> dict[str, str]:
        """Registers an artist (admin; JSON body with a name); the token is in this answer only."""
        writable()
        actor = admin(request)
        try:
            body = ArtistIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InputError("expected a JSON body with a name (" + exc.errors()[0]["msg"] + ")") from None
        token = await run_in_threadpool(ix.register_artist, body.name, actor, WRITE_WAIT_S)
        return {"name": body.name, "token": token}

    @app.post("/v1/artists/{name}/token")
    async def rotate(name: str, request: Request) -> dict[str, str]:
        """A new token for the artist (admin); the old one stops working."""
        writable()
        actor = admin(request)
        return {"name": name, "token": await run_in_threadpool(ix.rotate_token, name, actor, WRITE_WAIT_S)}

    @app.post("/v1/artists/{name}/works", status_code=201)
    async def add_works(name: str, request: Request) -> dict[str, Any]:
        """Adds works to the artist (their token or the admin's); answers their ids."""
        writable()
        actor = await run_in_threadpool(caller, request, name)
        images = await uploads(request)
        ids = await run_in_threadpool(ix.add_uploads, name, images, actor, WRITE_WAIT_S)
        return {"artist": name, "works": ids}

    @app.delete("/v1/artists/{name}/works/{work_id}")
    async def remove_work(name: str, work_id: int, request: Request) -> dict[str, Any]:
        """Removes one of the artist's works (their token or the admin's)."""
        writable()
        actor = await run_in_threadpool(caller, request, name)
        await run_in_threadpool(ix.remove_work, name, work_id, actor, WRITE_WAIT_S)
        return {"artist": name, "removed": work_id}

    @app.delete("/v1/artists/{name}")
    async def withdraw(name: str, request: Request) -> dict[str, Any]:
        """Removes the artist and all their works (the artist themself, or the admin)."""
        writable()
        actor = await run_in_threadpool(caller, request, name)
        n = await run_in_threadpool(ix.remove_artist, name, actor, WRITE_WAIT_S)
        return {"artist": name, "removed": n}

    @app.get("/v1/audit")
    def audit(request: Request, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """Recorded writes after id ``after`` (admin), oldest first; ``next`` pages on."""
        admin(request)
        entries = ix.audit(after, max(1, min(limit, 1000)))
        return {"entries": [asdict(e) for e in entries], "next": entries[-1].id if entries else after}

    @app.get("/v1/works/{work_id}/thumbnail")
    def thumbnail(work_id: int, request: Request) -> Response:
        """A small JPEG of a registered work, so a moderator can see the evidence
        (off with ``MIMICRY_THUMBNAILS=0``)."""
        authorise_scan(request)
        if not settings.thumbnails:
            raise NotFoundError("thumbnails are turned off on this service")
        work = ix.snapshot().works.get(work_id)
        if work is None:
            raise NotFoundError(f"no work {work_id}")
        try:
            data = thumbnail_jpeg(Path(work.path))
        except ImageError:
            raise NotFoundError("the file of work " + str(work_id) + " is not available") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/artists/{name}")
    def artist(name: str, request: Request) -> dict[str, Any]:
        """One artist: work count and whether the calibration covers them."""
        authorise_scan(request)
        info = ix.info()
        if name not in info.artists:
            raise NotFoundError(f"no artist {name!r} is registered")
        cal = ix.calibration
        covered = cal is not None and name in cal.artists
        return {"name": name, "works": info.artists[name],
                "calibration": info.calibration if covered else "uncalibrated"}

    return app
