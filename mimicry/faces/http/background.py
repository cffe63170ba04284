"""Jobs that run beside the service and start and stop with the app: any
object with ``start()`` and ``stop()`` in :attr:`Service.background`, started
in that order when the app starts and stopped in reverse when it stops
(:func:`lifespan`). :class:`Periodic` runs a function at start-up and then
every so often on a thread of its own; :func:`retention` is the history's
expiry (``MIMICRY_HISTORY_DAYS``), at start-up and hourly."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from mimicry.jobs import ThreadJob

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from mimicry.faces.http.context import Service

log = logging.getLogger(__name__)

#: Seconds between two expiries of the history.
RETENTION_EVERY_S = 3600.0


class Periodic(ThreadJob):
    """Calls ``fn()`` on a daemon thread at once (or, without ``at_start``,
    first after ``every_s``) and then every ``every_s`` seconds until
    :meth:`stop`; an exception is logged and the next run happens on time.
    :meth:`stop` wakes the thread and waits for a run in progress to end."""

    def __init__(self, name: str, every_s: float, fn: Callable[[], Any], at_start: bool = True) -> None:
        super().__init__()
        self.name, self.every_s, self.fn, self.at_start = name, every_s, fn, at_start
        self.thread_name = f"mimicry-{name}"
        self.runs = 0

    def _loop(self) -> None:
        if not self.at_start:
            self._stop.wait(self.every_s)
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:  # noqa: BLE001 - a failed run must not end the job
                log.exception("%s failed; trying again in %.0f s", self.name, self.every_s)
            self.runs += 1
            self._stop.wait(self.every_s)


def retention(svc: Service, every_s: float = RETENTION_EVERY_S) -> Periodic:
    """The history's expiry: scans older than ``MIMICRY_HISTORY_DAYS`` go (with
    their images, cases, decisions and previews) at start-up and every ``every_s``."""
    from mimicry.moderation import history

    days = svc.settings.history_days
    mdb = svc.moderation

    def expire() -> None:
        n = history.expire(mdb, days)
        if n:
            log.info("history: %d scans older than %d days removed", n, days)
        mdb.close()  # this thread's connection: a run an hour from now opens a fresh one

    return Periodic("history-retention", every_s, expire)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: starts every job of its service's ``background``,
    and stops them in reverse order when the app stops."""
    jobs = list(app.state.service.background)
    started = []
    try:
        for job in jobs:
            job.start()
            started.append(job)
        yield
    finally:
        for job in reversed(started):
            job.stop()
