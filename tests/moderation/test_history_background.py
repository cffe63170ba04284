"""A calibration background from the scan history: uploads grouped by
uploader, capped per uploader, each image once, uploaders with a confirmed
case left out (flags and dismissals are not); the calibration it makes, the
CLI flag and the service's scheduled refresh."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mimicry import StyleIndex
from mimicry.errors import InputError
from mimicry.moderation import cases
from mimicry.moderation.background import calibrate_from_history, calibrate_index_from_history, sample
from mimicry.moderation.db import ModerationDB


def _record(mdb: ModerationDB, vecs: np.ndarray, uploaders: list, at: float | None = None,
            shas: list[str] | None = None) -> list[int]:
    ids = []
    with mdb.transaction() as db:
        for i, (v, u) in enumerate(zip(vecs, uploaders)):
            sid = db.execute("INSERT INTO scans(at, kind, upload_id, uploader, tier, result) VALUES(?, 'image', ?, ?, "
                             "'not-flagged', '{}')", (time.time() if at is None else at, f"up-{len(ids)}-{u}", u)
                             ).lastrowid
            sha = shas[i] if shas else f"{sid:064x}"
            db.execute("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                       "VALUES(?, 0, ?, 'x', ?, 'not-flagged')", (sid, sha, np.asarray(v, np.float32).tobytes()))
            ids.append(int(sid))
    return ids


def _unit(rng, n: int, dim: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_sample_groups_by_uploader_caps_and_leaves_out_confirmed_uploaders(tmp_path):
    rng = np.random.default_rng(0)
    mdb = ModerationDB(tmp_path)
    recorded = _unit(rng, 12)
    owners = ["ann"] * 5 + ["bob"] * 3 + ["eve"] * 2 + [None] * 2
    ids = _record(mdb, recorded, owners)
    _record(mdb, _unit(rng, 2), ["ann", "ann"], shas=[f"{ids[0]:064x}", f"{ids[1]:064x}"])  # the same bytes again
    _record(mdb, _unit(rng, 1, 4), ["bob"])  # another model's dimension
    with mdb.transaction() as db:  # eve: confirmed once; bob: flagged, dismissed
        eve, _ = cases.open_case(db, "upload", "up-8-eve", ids[8], "flagged", ["x"])
        bob, _ = cases.open_case(db, "upload", "up-5-bob", ids[5], "flagged", ["x"])
    cases.decide(mdb, eve, "confirm", "", "m")
    cases.decide(mdb, bob, "dismiss", "", "m")
    bg = sample(mdb, 8, per_uploader=4)
    sizes = sorted(np.bincount(bg.groups).tolist())
    assert sizes == [1, 1, 3, 4]  # ann capped at 4, bob's 3, each upload without an uploader alone; eve out
    assert bg.uploaders == 4 and bg.left_out == 2 and bg.vectors.shape == (9, 8)
    # each sampled vector is one recorded by the uploader its group stands for (read back by row)
    owner_of = {recorded[i].tobytes(): owners[i] for i in range(12)}
    for g in set(bg.groups.tolist()):
        who = {owner_of[v.tobytes()] for v in bg.vectors[bg.groups == g]}
        assert len(who) == 1 and who != {"eve"}
    assert sample(mdb, 8, since=time.time() + 60).vectors.shape == (0, 8)  # recorded before: none
    assert len(sample(mdb, 8, limit=5).vectors) <= 5
    assert np.array_equal(sample(mdb, 8).vectors, sample(mdb, 8).vectors)  # seeded


def test_an_open_case_keeps_its_uploader_in(tmp_path):
    rng = np.random.default_rng(1)
    mdb = ModerationDB(tmp_path)
    ids = _record(mdb, _unit(rng, 3), ["ann"] * 3)
    with mdb.transaction() as db:
        cases.open_case(db, "upload", "up-0-ann", ids[0], "flagged", ["x"])
    assert len(sample(mdb, 8).vectors) == 3


@pytest.fixture
def with_history(calibrated_copy, default_embedder):
    """The demo's index with a history of 150 uploads by 30 uploaders near its background."""
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    snap = ix.snapshot()
    rng = np.random.default_rng(3)
    base = snap.background[rng.integers(0, len(snap.background), 150)]
    vecs = base + rng.normal(0, 0.5 / np.sqrt(snap.dim), base.shape)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    mdb = ModerationDB(calibrated_copy)
    _record(mdb, vecs, [f"user-{i % 30}" for i in range(150)])
    return ix, mdb


def test_calibrating_from_the_history_stores_it_as_background_and_maker_null(with_history):
    ix, mdb = with_history
    cal, bg = calibrate_from_history(ix, mdb, 0.02)
    assert (cal.null_source, cal.n_null, cal.target_rate) == ("background", 150, 0.02) and bg.uploaders == 30
    assert cal.makers.makers == 30 and cal.can_flag
    snap = ix.snapshot()
    assert snap.background.shape == (150, snap.dim) and len(np.unique(snap.background_groups)) == 30
    assert "from the scan history: 150 uploads by 30 uploaders" in ix.audit(0, 100)[-1].detail
    before = ix.calibration
    with pytest.raises(InputError, match="holds 150 usable uploads by 30 uploaders.*needs at least 300"):
        calibrate_from_history(ix, mdb, 0.01, minimum=300)
    assert ix.calibration.calibrated_at == before.calibrated_at  # nothing changed


def test_a_purged_uploader_leaves_the_stored_background_and_the_index_is_recalibrated(with_history):
    import json

    from mimicry.moderation import audited
    from mimicry.registry import Actor

    ix, mdb = with_history
    calibrate_from_history(ix, mdb, 0.02)
    theirs = {v for (v,) in mdb.read("SELECT i.vector FROM scan_images i JOIN scans s ON s.id = i.scan_id "
                                     "WHERE s.uploader = 'user-7'")}
    before, stored, runtime = ix.calibration, ix.snapshot().background, ix.info().background_runtime
    assert len(theirs) == 5 and sum(r.tobytes() in theirs for r in stored) == 5
    assert audited.purge_uploader(ix, mdb, "user-7", Actor("admin", None, None)) == 5
    snap = ix.snapshot()
    assert snap.background.shape == (145, snap.dim) and not any(r.tobytes() in theirs for r in snap.background)
    assert len(np.unique(snap.background_groups)) == 29
    after = ix.calibration
    assert after.n_null == 145 and after.target_rate == before.target_rate and after.makers.makers == 29
    assert after.calibrated_at > before.calibrated_at and ix.info().calibration == "current"
    assert ix.info().background_runtime == runtime not in (None, "not recorded")  # the rows kept theirs
    entry = ix.audit(0, 1000)[-1]
    assert entry.action == "purge_history" and json.loads(entry.detail) == {"scans": 5, "background_removed": 5}
    # an uploader none of whose images are in the background: the calibration is left as it is
    _record(mdb, _unit(np.random.default_rng(9), 2, snap.dim), ["late", "late"])
    assert audited.purge_uploader(ix, mdb, "late", Actor("admin", None, None)) == 2
    assert ix.calibration.calibrated_at == after.calibrated_at
    assert json.loads(ix.audit(0, 1000)[-1].detail) == {"scans": 2, "background_removed": 0}


def test_the_cli_flag_and_its_refusals(with_history, cli, tmp_path):
    ix, _ = with_history
    out = cli("calibrate", "--index", str(ix.folder), "--from-history", "--fpr", "0.02")
    assert out.exit_code == 0 and "150 uploads by 30 uploaders" in out.output
    both = cli("calibrate", "--index", str(ix.folder), "--from-history", "--background", str(tmp_path))
    assert both.exit_code == 2 and "give one" in both.output
    (ix.folder / "moderation.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (ix.folder / f"moderation.sqlite{extra}").unlink(missing_ok=True)
    with pytest.raises(InputError, match="no scan history"):
        calibrate_index_from_history(ix)


def test_too_few_uploads_to_flag_at_all_is_refused(calibrated_copy, default_embedder):
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    mdb = ModerationDB(calibrated_copy)
    _record(mdb, _unit(np.random.default_rng(4), 10, ix.snapshot().dim), ["a"] * 10)
    with pytest.raises(InputError, match="holds 10 usable uploads by 1 uploaders.*needs at least 99"):
        calibrate_from_history(ix, mdb, 0.01)


@pytest.fixture
def cli():
    """``mimicry ARGS`` in-process (calibrating from stored vectors loads no model)."""
    from typer.testing import CliRunner

    from mimicry.faces.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_the_confirmed_join_finds_exactly_the_scans_of_confirmed_cases(tmp_path):
    """Against the definition, on a random history: a confirmed upload case
    names the image scans of its upload id (or its one scan, ``scan:<id>``),
    a model case the model scans of its model id (or its one scan)."""
    from mimicry.moderation.background import _CONFIRMED_SCANS, _CONFIRMED_UPLOADERS

    rng = np.random.default_rng(3)
    mdb = ModerationDB(tmp_path)
    scans = []
    with mdb.transaction() as db:
        for i in range(400):
            kind = "image" if rng.random() < 0.7 else "model"
            hub = f"id-{rng.integers(40)}" if rng.random() < 0.8 else None
            uploader = f"u{rng.integers(30)}" if rng.random() < 0.9 else None
            sid = db.execute("INSERT INTO scans(at, kind, upload_id, model_id, uploader, tier, result) "
                             "VALUES(0, ?, ?, ?, ?, 'x', '{}')", (kind, hub if kind == "image" else None,
                                                                 hub if kind == "model" else None, uploader)
                             ).lastrowid
            scans.append((sid, kind, hub, uploader))
        for sid, kind, hub, _ in scans[::7]:
            case_kind = "upload" if kind == "image" else "model"
            key = hub if hub is not None and rng.random() < 0.7 else f"scan:{sid}"
            state = rng.choice(["confirmed", "open", "dismissed"])
            db.execute("INSERT OR IGNORE INTO cases(kind, key, scan_id, state, tier, artist, artists, opened_at, "
                       "updated_at) VALUES(?, ?, ?, ?, 'flagged', 'a', '[\"a\"]', 0, 0)",
                       (case_kind, key, sid, state))
    confirmed = mdb.read("SELECT kind, key FROM cases WHERE state='confirmed'")
    assert len(confirmed) > 10
    want = set()
    for case_kind, key in confirmed:
        kind = "image" if case_kind == "upload" else "model"
        want |= {(sid, u) for sid, k, hub, u in scans
                 if k == kind and (key == f"scan:{sid}" or (hub == key and not key.startswith("scan:")))}
    assert {s for (s,) in mdb.read(_CONFIRMED_SCANS)} == {sid for sid, _ in want
                                                          if dict((s, k) for s, k, _, _ in scans)[sid] == "image"}
    assert {u for (u,) in mdb.read(_CONFIRMED_UPLOADERS)} == {u for _, u in want if u is not None}
    plan = " ".join(str(r) for r in mdb.read("EXPLAIN QUERY PLAN " + _CONFIRMED_UPLOADERS))
    assert "scans_upload_id" in plan and "scans_model_id" in plan  # indexed lookups, not a scan per case
