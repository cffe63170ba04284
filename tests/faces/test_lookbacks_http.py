"""Lookbacks through the service: started when an artist registers or adds
works, read back by the admin (nobody else), started again after a stop,
and the calibration refreshed from the history on a schedule."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import AS_ADMIN, client_with  # noqa: E402
from mimicry.faces.http.lookbacks import HistoryRefresh  # noqa: E402
from mimicry.moderation import lookback  # noqa: E402
from mimicry.moderation.db import ModerationDB  # noqa: E402


def _finished(client: TestClient, lookback_id: int) -> dict:
    for _ in range(200):
        got = client.get(f"/v1/lookbacks/{lookback_id}", headers=AS_ADMIN).json()
        if got["state"] in ("finished", "failed"):
            return got
        time.sleep(0.05)
    raise AssertionError(f"lookback {lookback_id} did not finish: {got}")


def test_registering_and_adding_works_start_lookbacks(index, demo):
    _, _, out = demo
    client = client_with(index)
    reg = client.post("/v1/artists", json={"name": "newcomer"}, headers=AS_ADMIN).json()
    token = reg["token"]
    path = sorted((out / "unrelated").glob("*.png"))[0]
    added = client.post("/v1/artists/newcomer/works", files=[("files", (path.name, path.read_bytes(), "image/png"))],
                        headers={"Authorization": f"Bearer {token}"}).json()
    first, second = _finished(client, reg["lookback"]), _finished(client, added["lookback"])
    assert (first["artist"], first["state"], second["state"]) == ("newcomer", "finished", "finished")
    listed = client.get("/v1/lookbacks?artist=newcomer&limit=1", headers=AS_ADMIN).json()
    assert [lb["id"] for lb in listed["lookbacks"]] == [reg["lookback"]] and listed["next"] == reg["lookback"]
    rest = client.get(f"/v1/lookbacks?after={listed['next']}", headers=AS_ADMIN).json()
    assert [lb["id"] for lb in rest["lookbacks"]] == [added["lookback"]] and rest["next"] is None
    # nobody but the admin reads them
    assert client.get("/v1/lookbacks").status_code == 401
    assert client.get("/v1/lookbacks", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    missing = client.get("/v1/lookbacks/999", headers=AS_ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_lookback_off_starts_none(index):
    client = client_with(index, {"MIMICRY_LOOKBACK": "0"})
    assert client.post("/v1/artists", json={"name": "quiet"}, headers=AS_ADMIN).json()["lookback"] is None
    assert client.get("/v1/lookbacks", headers=AS_ADMIN).json() == {"lookbacks": [], "next": None}


def test_interrupted_lookbacks_start_again_with_the_app(index):
    mdb = ModerationDB(index.folder)
    left = lookback.begin(mdb, index.artists()[0])
    with mdb.transaction() as db:  # queued by a process that has stopped (its owner file gone)
        db.execute("UPDATE lookbacks SET owner='0123abcd' WHERE id=?", (left,))
    client = client_with(index)
    assert client.get(f"/v1/lookbacks/{left}", headers=AS_ADMIN).json()["state"] == "failed"
    again = client.get("/v1/lookbacks", headers=AS_ADMIN).json()["lookbacks"][-1]
    assert again["id"] != left and again["artist"] == index.artists()[0]
    assert _finished(client, again["id"])["state"] == "finished"


def test_the_scheduled_refresh_needs_a_certified_history(index, caplog):
    client = client_with(index, {"MIMICRY_HISTORY_CALIBRATE_HOURS": "24"})
    svc = client.app.state.service
    assert isinstance(client.app.state.history_refresh, HistoryRefresh)
    client.app.state.history_refresh.stop()
    mdb = svc.moderation_or_404()
    snap = index.snapshot()
    rng = np.random.default_rng(0)
    base = snap.background[rng.integers(0, len(snap.background), 300)]
    vecs = base + rng.normal(0, 0.5 / np.sqrt(snap.dim), base.shape)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    refresh = HistoryRefresh(svc, 24)
    with mdb.transaction() as db:
        for i, v in enumerate(vecs):
            sid = db.execute("INSERT INTO scans(at, kind, uploader, tier, result) VALUES(?, 'image', ?, "
                             "'not-flagged', '{}')", (time.time(), f"u{i % 60}")).lastrowid
            db.execute("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                       "VALUES(?, 0, ?, 'x', ?, 'not-flagged')", (sid, f"{i:064x}", v.tobytes()))
            if i == 200:
                db.execute("COMMIT")
                assert not refresh.once()  # 201 uploads: under the 300 a 1% promise needs
                assert "skipped" in caplog.text and "needs at least 300" in caplog.text
                db.execute("BEGIN IMMEDIATE")
    assert refresh.once()
    cal = svc.index.calibration
    assert (cal.n_null, cal.null_source, cal.makers.makers) == (300, "background", 60)


def test_no_refresh_when_off_or_read_only(index):
    assert client_with(index).app.state.history_refresh is None
    ro = client_with(index, {"MIMICRY_HISTORY_CALIBRATE_HOURS": "1"}, writes=False)
    assert ro.app.state.history_refresh is None
