"""Scans: ``POST /v1/scan`` (per image) and ``POST /v1/scan-model`` (one model's
samples). Model calls run on a worker thread, off the event loop, at most
``inference_slots`` at once. With ``MIMICRY_HISTORY=on`` every answer is
recorded (with the hub's ids from the form) before it is sent, on a worker
thread too, and a JSON answer says where: ``"history": {"scan", "case", "opened"}``."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from mimicry.errors import ImageError, InputError, RetryLaterError
from mimicry.faces.http.context import HTML_TOO, Service, wants_html
from mimicry.faces.http.deps import Hub, ScanAllowed, ScanUploads, ServiceDep, Uploads
from mimicry.images import ImageBytes
from mimicry.moderation import history
from mimicry.moderation.history import HubIds
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


async def _record(svc: Service, request: Request, record: Callable[..., history.Recorded], result: Any,
                  uploads: list[bytes], ids: HubIds) -> dict[str, Any] | None:
    """Records one answer in the history on a worker thread (nothing with
    ``MIMICRY_HISTORY=off``); where it went, for the answer. A database that
    cannot take the write is a 503: an answer is never sent unrecorded."""
    if not svc.recording:
        return None
    rid = request.headers.get("x-request-id")
    try:
        rec = await run_in_threadpool(record, svc.moderation, result, uploads, ids, rid, svc.settings.preview_side)
    except (sqlite3.Error, OSError) as exc:  # a busy or full database, a preview that cannot be written
        raise RetryLaterError(f"the scan could not be recorded ({exc}); try again",
                              svc.settings.retry_after_s) from None
    return {"scan": rec.scan_id, "case": rec.case_id, "opened": rec.opened}


@router.post("/v1/scan", response_model=None, responses=HTML_TOO, dependencies=[ScanAllowed])
async def scan(request: Request, svc: ServiceDep, ids: Hub, checked: ScanUploads) -> dict[str, Any] | HTMLResponse:
    """Scans one or more images (multipart field ``files``, repeatable; the
    hub's ``upload_id`` and ``uploader`` may come beside them):
    per image what ``mimicry scan --json`` prints, evidence without paths, in
    input order; a file that cannot be read gets ``error`` and no matches (422
    only when none can be read), and ``history`` where the scan was recorded.
    With ``Accept: text/html``, the HTML report instead (work thumbnails only
    when the service shows thumbnails)."""
    results = await run_in_threadpool(_scan_readable, svc, checked)
    images = [item for item, _ in checked]
    recorded = await _record(svc, request, history.record_images, results, [i.data for i in images], ids)
    svc.metrics.scanned.inc(sum(r.error is None for r in results))
    svc.metrics.flags.inc(sum(r.artist is not None for r in results))
    if wants_html(request):
        from mimicry.report import scan_report

        return HTMLResponse(await run_in_threadpool(
            scan_report, results, svc.index.info(), f"POST /v1/scan ({len(images)} images)", images,
            svc.settings.thumbnails, False))
    answer: dict[str, Any] = {"results": [r.to_dict(paths=False) for r in results]}
    return answer if recorded is None else answer | {"history": recorded}


@router.post("/v1/scan-model", response_model=None, responses=HTML_TOO, dependencies=[ScanAllowed])
async def scan_model(request: Request, svc: ServiceDep, ids: Hub, images: Uploads) -> dict[str, Any] | HTMLResponse:
    """The model verdict on 1 to ``MIMICRY_MAX_SAMPLES`` samples of one model (fewer than
    ``MIMICRY_MIN_SAMPLES`` get a warning; the hub's ``model_id`` and
    ``uploader`` may come beside them), as ``mimicry scan-model --json`` with
    ``history`` where it was recorded; with ``Accept: text/html``, the HTML report instead."""
    ix, s = svc.index, svc.settings
    if len(images) > s.max_samples:
        raise InputError(f"{len(images)} samples: send at most {s.max_samples} samples of one model")
    verdict = await run_in_threadpool(svc.infer, ix.scan_model, images)
    recorded = await _record(svc, request, history.record_model, verdict, [i.data for i in images], ids)
    svc.metrics.scanned.inc(verdict.n_samples)
    svc.metrics.flags.inc(verdict.flagged)
    if wants_html(request):
        from mimicry.report import model_report

        return HTMLResponse(await run_in_threadpool(
            model_report, verdict, ix.info(), f"POST /v1/scan-model ({len(images)} samples)", images,
            s.thumbnails, False))
    answer = verdict.to_dict(paths=False)
    return answer if recorded is None else answer | {"history": recorded}
