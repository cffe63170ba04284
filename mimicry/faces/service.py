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
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mimicry import __version__
from mimicry.errors import (
    ForbiddenError,
    InputError,
    MimicryError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from mimicry.images import ImageBytes, check_header, sniff_type
from mimicry.index import StyleIndex
from mimicry.settings import Settings, get_settings


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


def _error_response(exc: MimicryError) -> JSONResponse:
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def create_app(index: str | Path | StyleIndex, settings: Optional[Settings] = None) -> FastAPI:
    """The service over the index at ``index`` (or an open :class:`StyleIndex`),
    with ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    ix = index if isinstance(index, StyleIndex) else StyleIndex.open(index, device=settings.device)
    app = FastAPI(title="mimicry", version=__version__,
                  description="Screen images and fine-tuned models for imitation of registered artists.")
    app.state.index = ix
    app.state.settings = settings
    app.add_middleware(_LimitBody, limit=settings.request_bytes)

    @app.exception_handler(MimicryError)
    async def _mimicry_error(request: Request, exc: MimicryError) -> JSONResponse:
        return _error_response(exc)

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

    async def uploads(files: list[UploadFile]) -> list[ImageBytes]:
        """The request's files as :class:`ImageBytes`, after every limit but the decode."""
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
    async def healthz() -> dict[str, Any]:
        """Index loaded: backbone, recipe, counts, calibration."""
        info = ix.info()
        return {"status": "ok", "version": __version__, "backbone": info.backbone_id,
                "recipe": info.recipe, "artists": len(info.artists), "works": info.works,
                "calibration": info.calibration, "promise": info.promise}

    @app.post("/v1/scan")
    async def scan(request: Request, files: list[UploadFile] = File(...)) -> dict[str, Any]:
        """Scans one or more images (multipart field ``files``, repeatable):
        per image what ``mimicry scan --json`` prints, evidence without paths."""
        authorise_scan(request)
        images = await uploads(files)
        results = await run_in_threadpool(ix.scan, images)
        return {"results": [r.to_dict(paths=False) for r in results]}

    @app.post("/v1/scan-model")
    async def scan_model(request: Request, files: list[UploadFile] = File(...)) -> dict[str, Any]:
        """The model-level verdict on 8-200 samples of one model, as ``mimicry scan-model --json``."""
        authorise_scan(request)
        images = await uploads(files)
        if not settings.min_samples <= len(images) <= settings.max_samples:
            raise InputError(f"{len(images)} samples: send {settings.min_samples} to "
                             f"{settings.max_samples} samples of one model")
        verdict = await run_in_threadpool(ix.scan_model, images)
        return verdict.to_dict(paths=False)

    @app.get("/v1/artists")
    async def artists(request: Request) -> dict[str, Any]:
        """Registered artists with their work counts, and the calibration state."""
        authorise_scan(request)
        info = ix.info()
        return {"artists": [{"name": a, "works": n} for a, n in info.artists.items()],
                "calibration": info.calibration}

    @app.get("/v1/artists/{name}")
    async def artist(name: str, request: Request) -> dict[str, Any]:
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
