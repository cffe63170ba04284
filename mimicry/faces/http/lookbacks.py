"""Lookbacks over HTTP, and the service's own uses of the scan history:

- after an artist registers or adds works on a writable service, a lookback
  for them (:func:`after_change`, ``MIMICRY_LOOKBACK``);
- ``GET /v1/lookbacks`` and ``GET /v1/lookbacks/{id}``: their progress (the
  admin's or a moderator's token);
- lookbacks a stopped service left queued or running are marked
  ``interrupted`` and started again when the app is built (:func:`attach`);
- with ``MIMICRY_HISTORY_CALIBRATE_HOURS`` above 0, the calibration is
  refreshed from the history on that schedule (:class:`HistoryRefresh`).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import APIRouter

from mimicry.errors import MimicryError
from mimicry.faces.http.background import Periodic
from mimicry.faces.http.context import Count, Position, Service, WorkId
from mimicry.faces.http.deps import ServiceDep
from mimicry.faces.http.identity import Moderating
from mimicry.moderation import lookback

log = logging.getLogger(__name__)
router = APIRouter()

#: Who may read lookbacks: the admin or a moderator.
Reader = Moderating


def after_change(svc: Service, artist: str) -> int | None:
    """Starts a lookback for ``artist`` after they registered or added works
    (a writable service with ``MIMICRY_LOOKBACK`` on); its id, else None."""
    if not svc.writes or not svc.settings.lookback or svc.moderation is None:
        return None
    return lookback.start(svc.moderation, svc.index, artist)[0]


@router.get("/v1/lookbacks")
def lookbacks(actor: Reader, svc: ServiceDep, artist: Optional[str] = None, after: Position = 0,
              limit: Count = 50) -> dict[str, Any]:
    """Lookbacks (of ``artist`` when given), oldest first from id ``after``,
    at most ``limit`` (1 to 1000); ``next`` pages on (null: no more)."""
    found, nxt = lookback.listed(svc.moderation_or_404(), artist, after, max(1, min(limit, 1000)))
    return {"lookbacks": [lb.to_dict() for lb in found], "next": nxt}


@router.get("/v1/lookbacks/{lookback_id}")
def one(lookback_id: WorkId, actor: Reader, svc: ServiceDep) -> dict[str, Any]:
    """One lookback: ``artist``, ``state`` (queued, running, finished, failed),
    ``done`` of ``total`` vectors, cases ``opened``, ``error``."""
    return lookback.get(svc.moderation_or_404(), lookback_id).to_dict()


class HistoryRefresh(Periodic):
    """Refreshes the calibration from the scan history every ``hours`` on a
    thread of its own (:func:`mimicry.moderation.background.calibrate_from_history`),
    at the rate the index is calibrated at (else ``MIMICRY_FPR``), first
    ``hours`` after the start. A refresh needs a certified background
    (``ceil(3 / rate)`` uploads): with fewer, the calibration is left as it is
    and the log says why."""

    def __init__(self, svc: Service, hours: float) -> None:
        super().__init__("history-calibration", hours * 3600, self.once, at_start=False)
        self.svc = svc

    def once(self) -> bool:
        """One refresh; whether the calibration changed."""
        from mimicry.flagging import certified_size
        from mimicry.moderation.background import calibrate_from_history

        ix = self.svc.index
        try:
            cal = ix.calibration
            rate = cal.target_rate if cal is not None else self.svc.settings.fpr
            new, bg = calibrate_from_history(ix, self.svc.moderation_or_404(), rate, certified_size(rate))
        except MimicryError as exc:
            log.warning("calibration from the scan history skipped: %s", exc)
            return False
        log.info("calibrated from the scan history: %d uploads by %d uploaders, %d left out (confirmed), %r",
                 len(bg.vectors), bg.uploaders, bg.left_out, new)
        return True


def attach(svc: Service) -> HistoryRefresh | None:
    """What the app starts with: interrupted lookbacks started again, and the
    scheduled refresh, a job that starts and stops with the app (returned; None when off)."""
    if svc.moderation is None:
        return None
    if svc.writes and svc.settings.lookback:
        for artist in lookback.interrupted(svc.moderation):
            after_change(svc, artist)
    hours = svc.settings.history_calibrate_hours
    if hours <= 0 or not svc.writes:
        return None
    refresh = HistoryRefresh(svc, hours)
    svc.background.append(refresh)  # started and stopped with the app
    return refresh
