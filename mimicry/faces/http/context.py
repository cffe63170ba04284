"""What every route and dependency of one app shares: the :class:`Service`
(index, settings, metrics, slots), the error body, and content negotiation."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, TypeVar

from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.responses import JSONResponse

from mimicry.errors import BusyError, MimicryError, NotFoundError, clipped
from mimicry.faces.http.thumbs import Thumbnails
from mimicry.index import StyleIndex
from mimicry.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.moderation.db import ModerationDB

T = TypeVar("T")

#: The largest integer a parameter may hold (SQLite's, a signed 64-bit integer):
#: every integer parameter is bounded, so a larger one is a 400, never a 500.
INT_MAX = 2**63 - 1
#: Integer parameters: a work id (path), a position in a list (``after``) and a count (``limit``).
WorkId = Annotated[int, PathParam(ge=0, le=INT_MAX)]
Position = Annotated[int, Query(ge=0, le=INT_MAX)]
Count = Annotated[int, Query(ge=0, le=INT_MAX)]

#: OpenAPI note on the endpoints that can answer with a report.
HTML_TOO = {200: {"content": {"text/html": {}},
                  "description": "JSON; with `Accept: text/html`, the self-contained HTML report."}}


class Metrics:
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


@dataclass
class Service:
    """One app's state: its own handle on the index, its settings and switches,
    its metrics, the ``MIMICRY_INFLIGHT`` slots for requests holding images,
    the slots for model calls (``inference_slots`` of them), the works'
    thumbnails, the index folder's moderation database (None when it cannot be
    opened and nothing is recorded) and the background jobs that start and
    stop with the app (``start()``, ``stop()``)."""

    index: StyleIndex
    settings: Settings
    writes: bool
    insecure_no_auth: bool
    metrics: Metrics
    inflight: threading.BoundedSemaphore
    inference_slots: int
    moderation: ModerationDB | None = None
    background: list[Any] = field(default_factory=list)
    inference: threading.Semaphore = field(init=False)
    thumbs: Thumbnails = field(init=False)

    def __post_init__(self) -> None:
        self.inference = threading.Semaphore(self.inference_slots)
        self.thumbs = Thumbnails(self.index.folder, self.settings.thumbnail_side)

    @contextmanager
    def holding_images(self) -> Iterator[None]:
        """One of the ``MIMICRY_INFLIGHT`` slots for a request holding images
        (none free: :class:`BusyError`, a 503 with ``Retry-After``), given back
        however the block ends."""
        if not self.inflight.acquire(blocking=False):
            raise BusyError(f"{self.settings.inflight} requests with images are in flight; try again shortly",
                            retry_after=self.settings.retry_after_s)
        try:
            yield
        finally:
            self.inflight.release()

    def infer(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this (worker) thread, at most ``inference_slots`` at once."""
        with self.inference:
            return fn(*args)

    def moderation_or_404(self) -> ModerationDB:
        """The moderation database (scan history, cases, lookbacks);
        :class:`NotFoundError` on a service that has none (history off on a
        folder where it could not be opened)."""
        if self.moderation is None:
            raise NotFoundError("this service keeps no scan history: no cases or lookbacks")
        return self.moderation

    @property
    def recording(self) -> bool:
        """Whether scans are recorded (``MIMICRY_HISTORY=on`` and a moderation database)."""
        return self.settings.history == "on" and self.moderation is not None


def slot_count(given: int | None, settings: Settings) -> int:
    """Model calls at once: ``given`` when given, else ``MIMICRY_INFERENCE_SLOTS``;
    0 (either way) is one per core."""
    n = settings.inference_slots if given is None else given
    return n or os.cpu_count() or 1


def error_response(exc: MimicryError, folder: Path | None = None) -> JSONResponse:
    """The error body ``{"error": {"code", "message"}}`` with the error's status
    (and ``Retry-After`` when it suggests a wait); the index folder's path never
    leaves the server, and the message is cut to ``MESSAGE_CHARS`` (a body under 4 KB)."""
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    body = exc.to_dict()
    if folder is not None:
        body["message"] = body["message"].replace(str(folder), "index")
    body["message"] = clipped(body["message"])
    return JSONResponse({"error": body}, status_code=exc.http_status, headers=headers)


def wants_html(request: Request) -> bool:
    """Whether the client asks for the HTML report (``Accept: text/html`` before
    any JSON type); JSON stays the default."""
    accept = request.headers.get("accept", "").lower()
    html, json_ = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json_ < 0 or html < json_)

