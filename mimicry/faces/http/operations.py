"""Operations: ``/healthz`` and ``/metrics`` (open, for probes and scrapers,
unless a scan token is set: then ``/metrics`` needs it and ``/healthz``
answers only its status without it) and ``/v1/audit`` (admin)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mimicry import __version__
from mimicry.faces.http.context import Count, Position
from mimicry.faces.http.deps import Admin, ScanAllowed, ServiceDep
from mimicry.faces.http.gate import scan_token_error
from mimicry.results import iso_utc

router = APIRouter()


@router.get("/metrics", dependencies=[ScanAllowed])
def prometheus(svc: ServiceDep) -> Response:
    """Prometheus text: requests by route and status, latency, images scanned,
    flags raised, artists and works."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
def healthz(request: Request, svc: ServiceDep) -> dict[str, Any]:
    """Index loaded: backbone, recipe, counts, calibration (with a scan token
    set, only ``{"status"}`` to a request without it or the admin's)."""
    if scan_token_error(request.headers, svc.settings) is not None:
        return {"status": "ok"}
    info = svc.index.info()
    return {"status": "ok", "version": __version__, "backbone": info.backbone_id,
            "recipe": info.recipe, "artists": len(info.artists), "works": info.works,
            "calibration": info.calibration, "promise": info.promise}


@router.get("/v1/audit")
def audit(actor: Admin, svc: ServiceDep, after: Position = 0, limit: Count = 100) -> dict[str, Any]:
    """Recorded writes after id ``after`` (admin), oldest first, at most ``limit``
    and never more than ``audit_page``; ``next`` (an entry id) pages on; ``at`` is UTC ISO 8601."""
    entries = svc.index.audit(after, max(1, min(limit, svc.settings.audit_page)))
    return {"entries": [asdict(e) | {"at": iso_utc(e.at)} for e in entries], "next": entries[-1].id if entries else after}
