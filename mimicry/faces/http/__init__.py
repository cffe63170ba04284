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
(health, metrics, audit).
"""

from mimicry.faces.http.app import create_app

__all__ = ["create_app"]
