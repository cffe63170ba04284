"""Scans: ``POST /v1/scan`` (per image) and ``POST /v1/scan-model`` (one model's
samples). Model calls run on a worker thread, off the event loop, at most
``inference_slots`` at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from mimicry.errors import ImageError, InputError
from mimicry.faces.http.context import HTML_TOO, Service, wants_html
from mimicry.faces.http.deps import ScanAllowed, ScanUploads, ServiceDep, Uploads
from mimicry.images import ImageBytes
from mimicry.results import ScanResult

router = APIRouter()


def _scan_readable(svc: Service, checked: list[tuple[ImageBytes, ImageError | None]]) -> list[ScanResult]:
    """One result per upload, in input order: the readable ones scanned, each
    other one its reason as ``error`` and no matches (as the CLI reports an
    unreadable file); 422 when no upload could be read."""
    readable = [item for item, err in checked if err is None]
    scanned = iter(svc.infer(svc.index.scan, readable) if readable else [])
    results = [next(scanned) if err is None else
               ScanResult(item.name, [], err.reason) for item, err in checked]
    if len(checked) == 1 and checked[0][1] is not None:
        raise checked[0][1]
    if all(r.error is not None for r in results):
        raise ImageError(", ".join(r.image for r in results),
                         "no file could be read (" + "; ".join(str(r.error) for r in results) + ")")
    warnings = next(r.warnings for r in results if r.error is None)
    for r in results:
        if r.error is not None and not r.warnings:
            r.warnings.extend(warnings)
    return results


@router.post("/v1/scan", response_model=None, responses=HTML_TOO, dependencies=[ScanAllowed])
async def scan(request: Request, svc: ServiceDep, checked: ScanUploads) -> dict[str, Any] | HTMLResponse:
    """Scans one or more images (multipart field ``files``, repeatable):
    per image what ``mimicry scan --json`` prints, evidence without paths, in
    input order; a file that cannot be read gets ``error`` and no matches (422
    only when none can be read). With ``Accept: text/html``, the HTML report
    instead (work thumbnails only when the service shows thumbnails)."""
    results = await run_in_threadpool(_scan_readable, svc, checked)
    images = [item for item, _ in checked]
    svc.metrics.scanned.inc(sum(r.error is None for r in results))
    svc.metrics.flags.inc(sum(r.artist is not None for r in results))
    if wants_html(request):
        from mimicry.report import scan_report

        return HTMLResponse(await run_in_threadpool(
            scan_report, results, svc.index.info(), f"POST /v1/scan ({len(images)} images)", images,
            svc.settings.thumbnails, False))
    return {"results": [r.to_dict(paths=False) for r in results]}


@router.post("/v1/scan-model", response_model=None, responses=HTML_TOO, dependencies=[ScanAllowed])
async def scan_model(request: Request, svc: ServiceDep, images: Uploads) -> dict[str, Any] | HTMLResponse:
    """The model verdict on 1 to ``MIMICRY_MAX_SAMPLES`` samples of one model (fewer than
    ``MIMICRY_MIN_SAMPLES`` get a warning), as ``mimicry scan-model --json``; with
    ``Accept: text/html``, the HTML report instead."""
    ix, s = svc.index, svc.settings
    if len(images) > s.max_samples:
        raise InputError(f"{len(images)} samples: send at most {s.max_samples} samples of one model")
    verdict = await run_in_threadpool(svc.infer, ix.scan_model, images)
    svc.metrics.scanned.inc(verdict.n_samples)
    svc.metrics.flags.inc(verdict.flagged)
    if wants_html(request):
        from mimicry.report import model_report

        return HTMLResponse(await run_in_threadpool(
            model_report, verdict, ix.info(), f"POST /v1/scan-model ({len(images)} samples)", images,
            s.thumbnails, False))
    return verdict.to_dict(paths=False)
