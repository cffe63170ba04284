"""The app factory (:func:`create_app`), its middleware (the request-size limit,
request counting) and its error handlers."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mimicry import __version__
from mimicry.errors import InputError, MimicryError, PayloadTooLargeError, clipped
from mimicry.faces.http import artists, cases, lookbacks, moderators, operations, scan, webhooks
from mimicry.faces.http.background import lifespan, retention
from mimicry.faces.http.context import Metrics, Service, error_response, slot_count
from mimicry.faces.http.limits import BodyDeadline
from mimicry.faces.http.gate import RequestGate
from mimicry.index import StyleIndex
from mimicry.settings import Settings, get_settings

log = logging.getLogger(__name__)


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
            return await error_response(PayloadTooLargeError(
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


def _own_index(index: str | Path | StyleIndex, settings: Settings) -> StyleIndex:
    """The app's own handle on the index: a given :class:`StyleIndex` is left as
    it is (the app takes a :meth:`~StyleIndex.view` of it); a folder is opened
    (``settings.device``) and its committed state read now, so an unreadable
    index fails here. Through the handle, an upload that makes the approximate
    index due returns when its commit lands, and the index is rebuilt on a
    thread of its own (minutes at 1M works)."""
    if isinstance(index, StyleIndex):
        return index.view(ann_in_background=True)
    ix = StyleIndex.open(index, device=settings.device, verify=False, runtime=settings.runtime)
    ix = ix.view(ann_in_background=True)
    ix.snapshot()
    return ix


def _moderation(folder: Path, settings: Settings) -> Any:
    """The index folder's moderation database. One that cannot be opened (a
    read-only folder) is an :class:`InputError` when history is on, and
    leaves the service without cases when it is off."""
    import sqlite3

    from mimicry.moderation.db import ModerationDB

    try:
        return ModerationDB(folder)
    except (OSError, sqlite3.Error) as exc:
        if settings.history == "on":
            raise InputError(f"cannot record the scan history in the index folder ({exc}): "
                             f"make it writable, or set MIMICRY_HISTORY=off") from None
        return None


def _handle_errors(app: FastAPI, folder: Path) -> None:
    """Every error as ``{"error": {"code", "message"}}``: a :class:`MimicryError`
    with its own code and status (no server path in the message), an unknown
    route or method as ``not_found`` / ``method_not_allowed``, a request FastAPI
    could not validate as ``bad_input``."""

    @app.exception_handler(MimicryError)
    async def _mimicry_error(request: Request, exc: MimicryError) -> JSONResponse:
        return error_response(exc, folder)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": {"code": code, "message": clipped(str(exc.detail))}},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_response(InputError(f"invalid request: {where}: {first.get('msg', exc)}"))


def _count_requests(app: FastAPI, svc: Service) -> None:
    """Counts every request by route template and status, and times it."""

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        svc.metrics.requests.labels(route, str(response.status_code)).inc()
        svc.metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response


#: Swagger UI's script, style sheet and icon, installed with the package
#: (``fastapi-offline`` bundles them) and served under :data:`DOCS_ASSETS`:
#: ``/docs`` works with no network.
SWAGGER_FILES = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS = "/docs-assets"


def _serve_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the package's own copy of its assets, not a CDN."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_FILES), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")


def create_app(index: str | Path | StyleIndex, settings: Optional[Settings] = None,
               writes: bool = True, insecure_no_auth: bool = False,
               inference_slots: int | None = None) -> FastAPI:
    """The service over the index at ``index`` (or an open :class:`StyleIndex`,
    which the app leaves as it is: it works through a handle of its own), with
    ``settings`` (default: from the environment).

    With ``writes`` (artists register, upload and withdraw works), an admin
    token is required: without ``MIMICRY_ADMIN_TOKEN`` the app refuses to be
    built unless ``insecure_no_auth`` (then every write is allowed: for a
    loopback-only service). ``inference_slots``: model calls at once (default:
    ``MIMICRY_INFERENCE_SLOTS``, whose 0 is the number of cores; ``mimicry
    serve`` also gives each call one core). A writable service sends the
    webhooks' events on a thread that starts and stops with the app (its lifespan)."""
    settings = settings or get_settings()
    if writes and not settings.admin_token and not insecure_no_auth:
        raise InputError("refusing to serve writes without MIMICRY_ADMIN_TOKEN: set it, serve "
                         "--read-only, or --insecure-no-auth (loopback only)")
    ix = _own_index(index, settings)
    app = FastAPI(title="mimicry", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Screen images and fine-tuned models for imitation of registered artists.")
    svc = Service(ix, settings, writes, insecure_no_auth, Metrics(ix),
                  threading.BoundedSemaphore(settings.inflight), slot_count(inference_slots, settings),
                  _moderation(ix.folder, settings))
    if svc.moderation is not None:  # what was recorded expires, recording or not
        svc.background.append(retention(svc))
    if writes and svc.moderation is not None:
        webhooks.announce(svc)  # registrations committed before this start (the first start: none)
        svc.background.append(webhooks.deliverer(svc))
    app.state.service = svc
    app.state.index, app.state.settings, app.state.inflight = ix, settings, svc.inflight
    app.add_middleware(_LimitBody, limit=settings.request_bytes)
    app.add_middleware(BodyDeadline, timeout=settings.body_timeout_s)
    _count_requests(app, svc)
    app.add_middleware(RequestGate, settings=settings)  # outermost: ids, access log, /docs
    _handle_errors(app, ix.folder)
    _serve_docs(app)
    for router in (operations.router, scan.router, artists.router, cases.router, moderators.router,
                   webhooks.router, lookbacks.router):
        app.include_router(router)
    app.state.history_refresh = lookbacks.attach(svc)
    from mimicry.faces import web  # the pages for moderators and artists (mimicry.faces.web)

    app.include_router(web.router)
    return app
