"""What every request passes on its way in and out: its request id (the
client's ``X-Request-Id`` when well formed, else a new one, echoed on every
response and carried by every log line logged while it runs), the access log
(method, path without its query string, status, id: a token sent as
``?token=`` never reaches a log), and, on a service with a scan token, the
token check in front of the API's own description (``/docs``,
``/openapi.json``)."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any, Mapping

from mimicry.errors import ForbiddenError, MimicryError, UnauthorizedError
from mimicry.faces.http.context import error_response
from mimicry.settings import Settings

#: A request id a client may choose: 1 to 64 letters, digits, ``.``, ``_`` or ``-``.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The id of the request being handled (None outside one).
CURRENT: ContextVar[str | None] = ContextVar("mimicry_request_id", default=None)
#: The service's access log: one line per request.
access_log = logging.getLogger("mimicry.http.access")
#: Paths that describe the API; behind the scan token when there is one.
DESCRIPTIONS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def request_id(given: str | None) -> str:
    """``given`` when it is a well-formed request id, else a new one."""
    return given if given and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def bearer(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization: Bearer`` token, or None when there is none."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def scan_token_error(headers: Mapping[str, str], settings: Settings, action: str = "read this"
                     ) -> MimicryError | None:
    """Why a request may not ``action`` what the scan token guards (401 with no
    token, 403 with another), or None when it may (or no scan token is set)."""
    if settings.scan_token is None:
        return None
    given = bearer(headers)
    if given is None:
        return UnauthorizedError("this service needs a token: Authorization: Bearer <token>")
    ok = [t for t in (settings.scan_token, settings.admin_token) if t]
    if not any(hmac.compare_digest(given.encode(), t.encode()) for t in ok):
        return ForbiddenError(f"this token may not {action} here")
    return None


def _stamp_records() -> None:
    """Makes every log record made during a request end with its request id
    (installed once per process)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "mimicry_request_id", False):
        return

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        rid = CURRENT.get()
        if rid is not None:  # ids hold no '%': safe beside the record's own arguments
            record.msg = f"{record.msg} request_id={rid}"
            record.request_id = rid
        return record

    stamped.mimicry_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(stamped)


class RequestGate:
    """ASGI middleware, outermost of the app's own: gives the request its id
    (rewriting ``X-Request-Id`` so everything inside sees that one), echoes it
    on the response, logs the request without its query string, and guards
    the API's description behind the scan token when there is one."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.settings = app, settings
        _stamp_records()

    def _guarded(self, scope: dict) -> bool:
        app = scope.get("app")
        own = {getattr(app, a, None) for a in ("docs_url", "redoc_url", "openapi_url")}
        return self.settings.scan_token is not None and scope["path"] in own | set(DESCRIPTIONS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = [(k, v) for k, v in scope.get("headers") or [] if k != b"x-request-id"]
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = request_id(given)
        scope = {**scope, "headers": raw + [(b"x-request-id", rid.encode())]}
        status, start, token = 500, time.perf_counter(), CURRENT.set(rid)

        async def stamped(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            denied = None
            if self._guarded(scope):
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
                denied = scan_token_error(headers, self.settings)
            if denied is not None:
                await error_response(denied)(scope, receive, stamped)
            else:
                await self.app(scope, receive, stamped)
        finally:
            access_log.info("%s %s %s %.1fms", scope.get("method"), scope.get("path"), status,
                            1000 * (time.perf_counter() - start))
            CURRENT.reset(token)
