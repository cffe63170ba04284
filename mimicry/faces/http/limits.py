"""Time limits on a request's arrival: its headers (the connection is closed,
:func:`http_protocol`) and its body (408, :class:`BodyDeadline`). A client
that sends the start of a request and then waits holds a connection for at
most these long, and never an in-flight slot (those are taken once the body
has arrived: :mod:`.deps`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mimicry.errors import RequestTimeoutError


class BodyDeadline:
    """ASGI middleware: the whole body of a request must arrive within
    ``timeout`` seconds of its headers (0: no limit), else the read fails
    with :class:`RequestTimeoutError` (408). Only body reads are timed: once
    the last part has arrived, ``receive`` is passed through unchanged."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.timeout:
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.timeout
        complete = False

        async def timed() -> dict:
            nonlocal complete
            if complete:
                return await receive()
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except asyncio.TimeoutError:
                raise RequestTimeoutError(f"the request body did not arrive within {self.timeout:g} s") from None
            complete = message.get("type") != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


def http_protocol(header_timeout: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers do
    not arrive within ``header_timeout`` seconds of it opening or of its last
    response (0: no limit); uvicorn's own keep-alive timeout only covers a
    connection that sends nothing at all."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_headers()

        def _await_headers(self) -> None:
            if header_timeout:
                self.loop.call_later(header_timeout, self._headers_late, self.cycle)

        def _headers_late(self, cycle: Any) -> None:
            """No new request since the timer started: the headers are late."""
            idle = cycle is None or cycle.response_complete
            if self.cycle is cycle and idle and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol
