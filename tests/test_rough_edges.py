"""Small promises of the faces: progress lines off a terminal, times as UTC
ISO 8601, a short ``repr`` of a calibration."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from mimicry.faces.text import progress_lines
from mimicry.flagging import Calibration
from mimicry.results import iso_utc


def test_progress_lines_every_interval_and_at_each_stage_end(capsys):
    now = [100.0]
    update = progress_lines("calibrate", every=10.0, clock=lambda: now[0])
    for t, done in ((101, 100), (105, 200), (112, 1200), (115, 1300), (118, 2000)):
        now[0] = t
        update("background", done, 2000)
    now[0] = 120
    update("scanning", 50, 50)
    now[0] = 128
    update("scanning", 1, 1)  # a later stage of the same name starts afresh; a slow rate keeps two digits
    assert capsys.readouterr().err.splitlines() == [
        "mimicry: calibrate background 1200/2000 (100 img/s)",
        "mimicry: calibrate background 2000/2000 in 18.0 s (111 img/s)",
        "mimicry: calibrate scanning 50/50 in 2.0 s (25 img/s)",
        "mimicry: calibrate scanning 1/1 in 8.0 s (0.12 img/s)",
    ]


def test_iso_utc():
    assert iso_utc(0) is None and iso_utc(None) is None
    assert iso_utc(1764550379.9) == "2025-12-01T00:52:59Z"


def test_a_calibration_repr_is_short():
    n = 5000
    cal = Calibration(["a", "b"], np.zeros(2), np.ones(2), [np.zeros(n, np.float32)] * 2, np.zeros(2),
                      np.zeros(n), 1.0, 0.01, 1, n, "background", maker_sizes=np.full(40, 3))
    assert repr(cal) == "Calibration(2 artists, rate 0.01, null 5000 background, makers 40)"
    assert cal.to_dict()["calibrated_at"] is None


def test_service_audit_times_are_utc_iso():
    import pytest

    pytest.importorskip("fastapi")
    from mimicry.faces.http.operations import audit
    from mimicry.store.catalogue import AuditEntry

    entry = AuditEntry(7, 1764550379.0, None, "admin", None, "register_artist", "alice", "")
    svc = SimpleNamespace(index=SimpleNamespace(audit=lambda after, limit: [entry]),
                          settings=SimpleNamespace(audit_page=10))
    answer = audit(None, svc, after=3, limit=5)
    assert answer["entries"][0]["at"] == "2025-12-01T00:52:59Z" and answer["next"] == 7
