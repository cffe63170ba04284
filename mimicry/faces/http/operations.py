"""Operations: ``/healthz`` and ``/metrics`` (open, for probes and scrapers)
and ``/v1/audit`` (admin)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from mimicry import __version__
from mimicry.faces.http.deps import Admin, ServiceDep
from mimicry.results import iso_utc

router = APIRouter()


@router.get("/metrics")
def prometheus(svc: ServiceDep) -> Response:
    """Prometheus text: requests by route and status, latency, images scanned,
    flags raised, artists and works."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
def healthz(svc: ServiceDep) -> dict[str, Any]:
    """Index loaded: backbone, recipe, counts, calibration."""
    info = svc.index.info()
    return {"status": "ok", "version": __version__, "backbone": info.backbone_id,
            "recipe": info.recipe, "artists": len(info.artists), "works": info.works,
            "calibration": info.calibration, "promise": info.promise}


@router.get("/v1/audit")
def audit(actor: Admin, svc: ServiceDep, after: int = 0, limit: int = 100) -> dict[str, Any]:
    """Recorded writes after id ``after`` (admin), oldest first, at most ``limit``
    and never more than ``audit_page``; ``next`` (an entry id) pages on; ``at`` is UTC ISO 8601."""
    entries = svc.index.audit(after, max(1, min(limit, svc.settings.audit_page)))
    return {"entries": [asdict(e) | {"at": iso_utc(e.at)} for e in entries], "next": entries[-1].id if entries else after}
