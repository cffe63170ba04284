"""Settings in one place: every default and limit, with its environment variable.

:class:`Settings` is the single source of each setting's name, environment
variable, type, default and meaning (the ``metadata`` of its fields); the
settings page of the documentation is generated from it
(:func:`markdown_table`), and a test fails when the two differ.

:func:`get_settings` reads the environment each time it is called (cheap), so a
test or a service can change a variable and the next call sees it. Flags and
keyword arguments win over the environment; the environment wins over the
defaults here. A malformed value is an :class:`~mimicry.errors.InputError`
naming the variable. No other module of the package reads a ``MIMICRY_*``
variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from mimicry.errors import InputError

#: Checks a value may carry: ``rate`` (strictly between 0 and 1), ``positive``
#: (at least 1), ``nonneg`` (at least 0).
RATE, POSITIVE, NONNEG = "rate", "positive", "nonneg"  # a check may also be a tuple of the allowed values
#: What may run a backbone's forward pass (:mod:`mimicry.backbones`): ``auto`` picks per device.
RUNTIMES = ("auto", "torch", "onnx")


def _setting(default: Any, env: str, kind: type, doc: str, check: str | tuple[str, ...] | None = None,
             shown: str | None = None) -> Any:
    """A field of :class:`Settings`: its default, variable, type, meaning and check
    (``shown``: the default as the docs print it, when ``repr`` is not it)."""
    return field(default=default, metadata={"env": env, "kind": kind, "doc": doc, "check": check,
                                            "shown": shown})


@dataclass(frozen=True)
class Settings:
    """Defaults and limits; each field's ``metadata`` holds its variable and meaning."""

    # -- where and how -----------------------------------------------------------
    index: Path | None = _setting(None, "MIMICRY_INDEX", Path,
                                  "index folder when `--index` is not given", shown="none")
    home: Path = _setting(Path("~/.mimicry").expanduser(), "MIMICRY_HOME", Path,
                          "mimicry's own files (the evaluation's vector cache, exported ONNX graphs)", shown="`~/.mimicry`")
    device: str = _setting("auto", "MIMICRY_DEVICE", str, "`auto`, `cpu` or `cuda`")
    runtime: str = _setting("auto", "MIMICRY_RUNTIME", str,
                            "what runs the model: `torch`, `onnx` (ONNX Runtime, CPU) or `auto` "
                            "(ONNX Runtime on the CPU, torch on CUDA); the vectors are the same", RUNTIMES)
    # -- verdicts ---------------------------------------------------------------
    fpr: float = _setting(0.01, "MIMICRY_FPR", float,
                          "calibration target: of images by nobody registered, the share flagged "
                          "as anyone (per image, whatever the number of artists)", RATE)
    alpha: float = _setting(0.001, "MIMICRY_ALPHA", float,
                            "significance level of the model verdict's `imitates` tier (act on it)", RATE)
    review_alpha: float = _setting(0.05, "MIMICRY_REVIEW_ALPHA", float,
                                   "significance level of the model verdict's `review` tier (send it "
                                   "to a person with the evidence)", RATE)
    min_samples: int = _setting(8, "MIMICRY_MIN_SAMPLES", int,
                                "fewest samples a model verdict is designed for: fewer are judged, "
                                "with a warning", POSITIVE)
    max_samples: int = _setting(200, "MIMICRY_MAX_SAMPLES", int,
                                "most samples the model-level test is designed for", POSITIVE)
    top: int = _setting(3, "MIMICRY_TOP", int, "artists reported per image", POSITIVE)
    evidence: int = _setting(3, "MIMICRY_EVIDENCE", int, "nearest works shown per artist", POSITIVE)
    # -- embedding and indexing -------------------------------------------------
    batch_size: int = _setting(32, "MIMICRY_BATCH_SIZE", int, "images per model batch", POSITIVE)
    checkpoint: int = _setting(512, "MIMICRY_CHECKPOINT", int, "images per commit while indexing",
                               POSITIVE)
    ray_threads: int = _setting(1, "MIMICRY_RAY_THREADS", int,
                                "torch threads of each Ray embedding actor", POSITIVE)
    max_file_bytes: int = _setting(64 * 1024 * 1024, "MIMICRY_MAX_FILE_BYTES", int,
                                   "larger files are refused unread", POSITIVE, shown="64 MiB")
    max_pixels: int = _setting(89_478_485, "MIMICRY_MAX_PIXELS", int,
                               "larger images are refused as decompression bombs (Pillow's own guard)",
                               POSITIVE)
    # -- the index on disk ------------------------------------------------------
    lock_wait_s: float = _setting(30.0, "MIMICRY_LOCK_WAIT", float,
                                  "seconds a writer waits for the lock before `LockedError`", NONNEG)
    retry_after_s: float = _setting(2.0, "MIMICRY_RETRY_AFTER", float,
                                    "the wait a `LockedError` or a 503 suggests (seconds)", NONNEG)
    snapshot_retries: int = _setting(20, "MIMICRY_SNAPSHOT_RETRIES", int,
                                     "reads retried while a writer replaces the vectors", NONNEG)
    snapshot_retry_s: float = _setting(0.05, "MIMICRY_SNAPSHOT_RETRY", float,
                                       "seconds between those retries", NONNEG)
    # -- the service ------------------------------------------------------------
    upload_bytes: int = _setting(20 * 1000 * 1000, "MIMICRY_UPLOAD_BYTES", int,
                                 "service: largest file in a request (413)", POSITIVE, shown="20 MB")
    request_bytes: int = _setting(256 * 1000 * 1000, "MIMICRY_REQUEST_BYTES", int,
                                  "service: largest request (413)", POSITIVE, shown="256 MB")
    request_files: int = _setting(200, "MIMICRY_REQUEST_FILES", int,
                                  "service: most files in a request (413)", POSITIVE)
    form_fields: int = _setting(16, "MIMICRY_FORM_FIELDS", int,
                                "service: most non-file fields in a multipart request (400)", POSITIVE)
    form_field_bytes: int = _setting(1024 * 1024, "MIMICRY_FORM_FIELD_BYTES", int,
                                     "service: largest non-file multipart field (400)", POSITIVE,
                                     shown="1 MiB")
    write_wait_s: float = _setting(1.0, "MIMICRY_WRITE_WAIT", float,
                                   "service: seconds a write waits for the index lock before 503", NONNEG)
    audit_page: int = _setting(1000, "MIMICRY_AUDIT_PAGE", int,
                               "service: most audit entries in one answer", POSITIVE)
    thumbnail_side: int = _setting(256, "MIMICRY_THUMBNAIL_SIDE", int,
                                   "service: long side of work thumbnails (pixels)", POSITIVE)
    scan_token: str | None = _setting(None, "MIMICRY_SCAN_TOKEN", str,
                                      "service: when set, scans need `Authorization: Bearer` it",
                                      shown="none")
    admin_token: str | None = _setting(None, "MIMICRY_ADMIN_TOKEN", str,
                                       "service: the administrator's token", shown="none")
    thumbnails: int = _setting(1, "MIMICRY_THUMBNAILS", int,
                               "service: serve small JPEGs of registered works (0: off)", NONNEG)
    inflight: int = _setting(32, "MIMICRY_INFLIGHT", int,
                             "service: requests with images at once; more answer 503", POSITIVE)
    inference_slots: int = _setting(0, "MIMICRY_INFERENCE_SLOTS", int,
                                    "service: model calls at once (0: one per core)", NONNEG)
    header_timeout_s: float = _setting(10.0, "MIMICRY_HEADER_TIMEOUT", float,
                                       "service: seconds a connection has to send a request's headers "
                                       "(then it is closed; 0: no limit)", NONNEG)
    body_timeout_s: float = _setting(30.0, "MIMICRY_BODY_TIMEOUT", float,
                                     "service: seconds a request has to send its whole body (408; 0: no "
                                     "limit)", NONNEG)
    connections: int = _setting(256, "MIMICRY_CONNECTIONS", int,
                                "service: open connections at once; more answer 503 (bounds bodies "
                                "in progress)", POSITIVE)
    # -- the hub's moderation loop ------------------------------------------------
    history: str = _setting("on", "MIMICRY_HISTORY", str,
                            "service: record every scan (the hub's ids, each image's sha256, vector and "
                            "preview, the verdict) and open cases: `on` or `off`", ("on", "off"))
    history_days: int = _setting(90, "MIMICRY_HISTORY_DAYS", int,
                                 "service: days a recorded scan is kept (expired at start-up and hourly, "
                                 "with its cases and previews)", POSITIVE)
    preview_side: int = _setting(1024, "MIMICRY_PREVIEW_SIDE", int,
                                 "service: long side of the previews kept of recorded uploads (pixels)",
                                 POSITIVE)
    # -- webhooks ---------------------------------------------------------------
    webhook_retry_s: float = _setting(10.0, "MIMICRY_WEBHOOK_RETRY", float,
                                      "webhooks: seconds before a failed delivery is tried again, "
                                      "doubling with each failure", NONNEG)
    webhook_retry_max_s: float = _setting(3600.0, "MIMICRY_WEBHOOK_RETRY_MAX", float,
                                          "webhooks: the longest wait between two tries of a delivery "
                                          "(seconds)", NONNEG)
    webhook_give_up_s: float = _setting(86400.0, "MIMICRY_WEBHOOK_GIVE_UP", float,
                                        "webhooks: seconds after an event was created that its failing "
                                        "delivery is given up", NONNEG, shown="86400 (24 h)")
    webhook_timeout_s: float = _setting(10.0, "MIMICRY_WEBHOOK_TIMEOUT", float,
                                        "webhooks: seconds one POST to an endpoint may take", NONNEG)
    webhook_poll_s: float = _setting(5.0, "MIMICRY_WEBHOOK_POLL", float,
                                     "webhooks: seconds between looks for due deliveries and for events "
                                     "other processes wrote (the service's own are sent at once)", NONNEG)
    lookback: int = _setting(1, "MIMICRY_LOOKBACK", int,
                             "service: re-screen the scan history for an artist who registers or adds "
                             "works (0: off)", NONNEG)
    history_calibrate_hours: float = _setting(0.0, "MIMICRY_HISTORY_CALIBRATE_HOURS", float,
                                              "service: refresh the calibration from the scan history "
                                              "(uploads grouped by uploader) every this many hours "
                                              "(0: off)", NONNEG)


def environment() -> dict[str, str]:
    """Setting name -> environment variable, for every setting."""
    return {f.name: f.metadata["env"] for f in fields(Settings)}


#: Setting name -> environment variable (:func:`environment`).
ENVIRONMENT = environment()


def _parse(f: Any, raw: str) -> Any:
    kind = f.metadata["kind"]
    if kind is Path:
        return Path(raw).expanduser()
    return kind(raw)


def _check(f: Any, value: Any) -> None:
    check, env = f.metadata["check"], f.metadata["env"]
    if value is None or check is None:
        return
    if check == RATE:
        check_rate(env, value)
    elif check == POSITIVE:
        check_positive(env, value)
    elif check == NONNEG and value < 0:
        raise InputError(f"{env}={value}: must not be negative")
    elif isinstance(check, tuple) and value not in check:
        raise InputError(f"{env}={value!r}: use {', '.join(check[:-1])} or {check[-1]}")


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings as the environment (``os.environ`` by default) sets them;
    every value checked (:class:`InputError` naming the variable)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(f.metadata["env"])
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _parse(f, raw)
        except ValueError:
            raise InputError(f"{f.metadata['env']}={raw!r}: not a valid {f.name}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    for f in fields(Settings):
        _check(f, getattr(settings, f.name))
    if settings.review_alpha < settings.alpha:
        raise InputError("MIMICRY_REVIEW_ALPHA must be at least MIMICRY_ALPHA")
    if settings.min_samples > settings.max_samples:
        raise InputError("MIMICRY_MIN_SAMPLES must not exceed MIMICRY_MAX_SAMPLES")
    return settings


def markdown_table() -> str:
    """The settings table of the documentation (``docs/settings.md`` holds it)."""
    lines = ["| variable | setting | default | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        m = f.metadata
        shown = m["shown"] if m["shown"] is not None else f"`{f.default}`"
        lines.append(f"| `{m['env']}` | `{f.name}` | {shown} | {m['doc']} |")
    return "\n".join(lines) + "\n"


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


def positive_or(value: int | None, default: int, name: str) -> int:
    """``value`` (at least 1, else :class:`InputError` naming ``name``), or ``default`` when None."""
    return default if value is None else int(check_positive(name, value))  # type: ignore[arg-type]
