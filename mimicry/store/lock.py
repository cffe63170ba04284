"""The write lock: one writer per index at a time, across processes and threads."""

from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from mimicry.errors import LockedError

FILENAME = "lock"


def flock_until(fh: IO, deadline: float) -> bool:
    """Takes an exclusive ``flock`` on ``fh``, trying until ``deadline``
    (``time.monotonic()``); whether it was taken."""
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class WriteLock:
    """An exclusive ``flock`` on ``<index>/lock`` plus a thread lock, so writers
    in one process (a service's threads) and in others (the CLI) take turns.

    Promise: :meth:`hold` waits at most ``wait_s`` seconds, then raises
    :class:`LockedError` (with ``retry_after``) instead of blocking forever.
    The lock dies with its process: a killed writer never leaves it held.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILENAME
        self._thread_lock = threading.Lock()

    @contextmanager
    def hold(self, wait_s: float, retry_after_s: float) -> Iterator[None]:
        deadline = time.monotonic() + max(0.0, wait_s)
        if not self._thread_lock.acquire(timeout=max(0.0, wait_s)):
            raise self._locked(retry_after_s)
        try:
            with open(self.path, "a+") as fh:
                if not flock_until(fh, deadline):
                    raise self._locked(retry_after_s)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _locked(self, retry_after_s: float) -> LockedError:
        return LockedError(f"{self.path.parent}: another writer holds the index; "
                           f"try again in {retry_after_s:g} s", retry_after=retry_after_s)
