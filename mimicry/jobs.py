"""A loop on a daemon thread of its own that starts and stops on request: the
base of the service's periodic jobs (:class:`mimicry.faces.http.background.Periodic`)
and of the webhook worker (:class:`mimicry.moderation.delivery.Deliverer`)."""

from __future__ import annotations

import threading


class ThreadJob:
    """Runs :meth:`_loop` on a daemon thread named ``thread_name`` from
    :meth:`start` (a second call does nothing) until :meth:`stop`, which sets
    ``_stop``, wakes the loop (:meth:`_wake_up`) and waits for the pass in
    progress to end. The loop ends when ``_stop`` is set."""

    thread_name = "mimicry-job"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake_up()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake_up(self) -> None:
        """Wakes a loop that waits on something else than ``_stop``."""

    def _loop(self) -> None:  # pragma: no cover - every job has its own
        raise NotImplementedError
