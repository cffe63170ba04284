"""The HTTP service: a FastAPI app over :class:`mimicry.StyleIndex`, no logic of its own.

Built by :func:`create_app` (tests use the factory; ``mimicry serve`` runs it
under uvicorn). Every error is ``{"error": {"code", "message"}}`` with the code
and HTTP status of its :class:`~mimicry.errors.MimicryError`. Uploads are
checked before anything is decoded: bytes per request, files per request and
bytes per file (413), type sniffed from the bytes (415), pixels from the image
header (422). Inference runs on a worker thread, off the event loop; reads
answer from the index's last committed snapshot.

Layout: :mod:`.app` (the factory, middleware, error handlers), :mod:`.context`
(the state one app shares), :mod:`.deps` (authorisation, writer identity,
uploads and in-flight slots as FastAPI dependencies), and one router per area:
:mod:`.scan`, :mod:`.artists` (artists and works), :mod:`.operations`
(health, metrics, audit); :mod:`.limits` (deadlines for headers and bodies)
and :mod:`.thumbs` (bounded, cached thumbnails).
"""

from __future__ import annotations

from pathlib import Path

from mimicry.errors import InputError
from mimicry.faces.http.app import create_app
from mimicry.faces.http.limits import http_protocol
from mimicry.settings import Settings

__all__ = ["create_app", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(folder: Path, settings: Settings, host: str, port: int, writes: bool = True,
          insecure_no_auth: bool = False) -> None:
    """Serves the index at ``folder`` under uvicorn until stopped (``mimicry serve``).
    ``insecure_no_auth`` is refused on any address but loopback (:class:`InputError`)."""
    import torch
    import uvicorn

    if insecure_no_auth and host not in LOOPBACK:
        raise InputError(f"--insecure-no-auth serves loopback only, not {host}")
    # One core per model call, as many calls at once as cores: on 2 cores this
    # served more images a second at 16 concurrent requests than every call
    # spreading over both cores (docs, "HTTP API").
    torch.set_num_threads(1)
    # The app opens the folder itself: one handle, one copy of the vectors in memory.
    app = create_app(folder, settings, writes=writes, insecure_no_auth=insecure_no_auth)
    # Slow clients: headers and bodies have deadlines (.limits), and at most
    # ``connections`` are open at once, which bounds the bodies in progress.
    # uvicorn's access log would print query strings (a token sent as ?token=):
    # the app logs each request itself (mimicry.faces.http.gate), path only.
    uvicorn.run(app, host=host, port=port, log_level="info", http=http_protocol(settings.header_timeout_s),
                limit_concurrency=settings.connections, access_log=False, log_config=log_config())


def log_config() -> dict:
    """uvicorn's logging configuration, with the package's loggers (the access
    log among them) printed through its default handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["mimicry"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
