"""Settings in one place: every default and limit, with its environment variable.

:func:`get_settings` reads the environment each time it is called (cheap), so a
test or a service can change a variable and the next call sees it. Flags and
keyword arguments win over the environment; the environment wins over the
defaults here. A malformed value is an :class:`~mimicry.errors.InputError`
naming the variable.

| setting | variable | default | meaning |
|---|---|---|---|
| ``index`` | ``MIMICRY_INDEX`` | none | index folder when ``--index`` is not given |
| ``home`` | ``MIMICRY_HOME`` | ``~/.mimicry`` | mimicry's own files (the evaluation's vector cache) |
| ``device`` | ``MIMICRY_DEVICE`` | ``auto`` | auto, cpu or cuda |
| ``fpr`` | ``MIMICRY_FPR`` | 0.01 | calibration target: share of negatives flagged per artist |
| ``alpha`` | ``MIMICRY_ALPHA`` | 0.001 | significance level of model-level verdicts |
| ``min_samples`` / ``max_samples`` | ``MIMICRY_MIN_SAMPLES`` / ``MIMICRY_MAX_SAMPLES`` | 8 / 200 | sample counts the model-level test is designed for |
| ``top`` | ``MIMICRY_TOP`` | 3 | artists reported per image |
| ``evidence`` | ``MIMICRY_EVIDENCE`` | 3 | nearest works shown per artist |
| ``batch_size`` | ``MIMICRY_BATCH_SIZE`` | 32 | images per model batch |
| ``checkpoint`` | ``MIMICRY_CHECKPOINT`` | 512 | images per commit while indexing |
| ``max_file_bytes`` | ``MIMICRY_MAX_FILE_BYTES`` | 64 MiB | larger files are refused unread |
| ``max_pixels`` | ``MIMICRY_MAX_PIXELS`` | 89,478,485 | larger images are refused as decompression bombs |
| ``lock_wait_s`` | ``MIMICRY_LOCK_WAIT`` | 30 | seconds a writer waits for the lock before ``LockedError`` |
| ``retry_after_s`` | ``MIMICRY_RETRY_AFTER`` | 2 | the wait a ``LockedError`` suggests |
| ``snapshot_retries`` | ``MIMICRY_SNAPSHOT_RETRIES`` | 20 | reads retried while a writer replaces the vectors |
| ``snapshot_retry_s`` | ``MIMICRY_SNAPSHOT_RETRY`` | 0.05 | seconds between those retries |
| ``upload_bytes`` | ``MIMICRY_UPLOAD_BYTES`` | 20 MB | service: largest file in a request (413) |
| ``request_bytes`` | ``MIMICRY_REQUEST_BYTES`` | 256 MB | service: largest request (413) |
| ``request_files`` | ``MIMICRY_REQUEST_FILES`` | 200 | service: most files in a request (413) |
| ``scan_token`` | ``MIMICRY_SCAN_TOKEN`` | none | service: when set, scans need ``Authorization: Bearer`` it |
| ``admin_token`` | ``MIMICRY_ADMIN_TOKEN`` | none | service: the administrator's token |
| ``thumbnails`` | ``MIMICRY_THUMBNAILS`` | 1 | service: serve small JPEGs of registered works (0: off) |
| ``inflight`` | ``MIMICRY_INFLIGHT`` | 32 | service: requests with images at once; more answer 503 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from mimicry.errors import InputError


@dataclass(frozen=True)
class Settings:
    """Defaults and limits (see the module docstring for each one's variable)."""

    index: Path | None = None
    home: Path = Path("~/.mimicry").expanduser()
    device: str = "auto"
    fpr: float = 0.01
    alpha: float = 0.001
    min_samples: int = 8
    max_samples: int = 200
    top: int = 3
    evidence: int = 3
    batch_size: int = 32
    checkpoint: int = 512
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 89_478_485  # Pillow's own default guard
    lock_wait_s: float = 30.0
    retry_after_s: float = 2.0
    snapshot_retries: int = 20
    snapshot_retry_s: float = 0.05
    upload_bytes: int = 20 * 1000 * 1000
    request_bytes: int = 256 * 1000 * 1000
    request_files: int = 200
    scan_token: str | None = None
    admin_token: str | None = None
    thumbnails: int = 1
    inflight: int = 32


#: setting name -> environment variable
ENVIRONMENT = {
    "index": "MIMICRY_INDEX",
    "home": "MIMICRY_HOME",
    "device": "MIMICRY_DEVICE",
    "fpr": "MIMICRY_FPR",
    "alpha": "MIMICRY_ALPHA",
    "min_samples": "MIMICRY_MIN_SAMPLES",
    "max_samples": "MIMICRY_MAX_SAMPLES",
    "top": "MIMICRY_TOP",
    "evidence": "MIMICRY_EVIDENCE",
    "batch_size": "MIMICRY_BATCH_SIZE",
    "checkpoint": "MIMICRY_CHECKPOINT",
    "max_file_bytes": "MIMICRY_MAX_FILE_BYTES",
    "max_pixels": "MIMICRY_MAX_PIXELS",
    "lock_wait_s": "MIMICRY_LOCK_WAIT",
    "retry_after_s": "MIMICRY_RETRY_AFTER",
    "snapshot_retries": "MIMICRY_SNAPSHOT_RETRIES",
    "snapshot_retry_s": "MIMICRY_SNAPSHOT_RETRY",
    "upload_bytes": "MIMICRY_UPLOAD_BYTES",
    "request_bytes": "MIMICRY_REQUEST_BYTES",
    "request_files": "MIMICRY_REQUEST_FILES",
    "scan_token": "MIMICRY_SCAN_TOKEN",
    "admin_token": "MIMICRY_ADMIN_TOKEN",
    "thumbnails": "MIMICRY_THUMBNAILS",
    "inflight": "MIMICRY_INFLIGHT",
}

_PATHS = {"index", "home"}
_INTS = {"min_samples", "max_samples", "top", "evidence", "batch_size", "checkpoint",
         "max_file_bytes", "max_pixels", "snapshot_retries", "upload_bytes", "request_bytes",
         "request_files", "thumbnails", "inflight"}
_FLOATS = {"fpr", "alpha", "lock_wait_s", "retry_after_s", "snapshot_retry_s"}


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings as the environment (``os.environ`` by default) sets them."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(ENVIRONMENT[f.name])
        if raw is None or raw == "":
            continue
        try:
            if f.name in _PATHS:
                values[f.name] = Path(raw).expanduser()
            elif f.name in _INTS:
                values[f.name] = int(raw)
            elif f.name in _FLOATS:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise InputError(f"{ENVIRONMENT[f.name]}={raw!r}: not a valid {f.name}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    check_rate("fpr", settings.fpr)
    check_rate("alpha", settings.alpha)
    for name in _INTS - {"snapshot_retries", "thumbnails"}:
        check_positive(ENVIRONMENT[name], getattr(settings, name))
    for name in _FLOATS - {"fpr", "alpha"} | {"snapshot_retries"}:
        if getattr(settings, name) < 0:
            raise InputError(f"{ENVIRONMENT[name]}={getattr(settings, name)}: must not be negative")
    if settings.min_samples > settings.max_samples:
        raise InputError("MIMICRY_MIN_SAMPLES must not exceed MIMICRY_MAX_SAMPLES")
    return settings


def check_positive(name: str, value: int | None) -> int | None:
    """``value`` if it is None or at least 1, else :class:`InputError` naming ``name``."""
    if value is not None and value < 1:
        raise InputError(f"{name} must be at least 1, got {value}")
    return value


def check_rate(name: str, value: float) -> float:
    """``value`` if it lies strictly between 0 and 1, else :class:`InputError`."""
    if not 0 < value < 1:
        raise InputError(f"{name} must be between 0 and 1, got {value}")
    return value
