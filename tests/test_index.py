"""StyleIndex, the Python API: incremental indexing, scans from paths and bytes,
reads that never write, calibration kept fresh by writes."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from helpers import consistent
from mimicry import ImageBytes, StyleIndex
from mimicry.errors import InputError, LockedError, NotCalibratedError, NotFoundError
from mimicry.synthetic import STYLES, paint, scene


def test_incremental_reindex(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    first = ix.add_folder(portfolio)
    assert (first.embedded, first.artists, first.works) == (9, 3, 9)

    again = ix.add_folder(portfolio)
    assert (again.embedded, again.unchanged, again.removed) == (0, 9, 0)

    artist = STYLES[0].name
    paint(scene(777), STYLES[0], 777).save(portfolio / artist / "new.png")
    added = ix.add_folder(portfolio)
    assert (added.embedded, added.unchanged) == (1, 9)

    # Changed bytes under the same path: re-embedded, old vector replaced.
    changed = portfolio / artist / "work-0.png"
    paint(scene(4242), STYLES[0], 4242).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    rep = ix.add_folder(portfolio)
    assert (rep.embedded, rep.works) == (1, 10)

    # A file gone from the folder is removed from the index.
    (portfolio / artist / "new.png").unlink()
    rep = ix.add_folder(portfolio)
    assert (rep.removed, rep.works, rep.embedded) == (1, 9, 0)
    assert consistent(tmp_path / "ix") == (9, 9)


def test_same_bytes_elsewhere_are_not_reembedded(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    src = portfolio / STYLES[0].name / "work-1.png"
    shutil.copy(src, portfolio / STYLES[1].name / "copy.png")
    calls = []
    original = default_embedder.embed_tensors
    default_embedder.embed_tensors = lambda b: calls.append(len(b)) or original(b)
    try:
        rep = ix.add_folder(portfolio)
    finally:
        default_embedder.embed_tensors = original
    assert rep.embedded == 1 and calls == []


def test_remove_artist_removes_vectors(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    assert ix.remove_artist(STYLES[1].name) == 3
    assert STYLES[1].name not in ix.artists()
    assert consistent(tmp_path / "ix") == (6, 6)
    with pytest.raises(NotFoundError, match="nobody"):
        ix.remove_artist("nobody")
    res = ix.scan([portfolio / STYLES[1].name / "work-0.png"], top=5)[0]
    assert STYLES[1].name not in [m.artist for m in res.matches]


def test_bad_files_are_skipped_and_reported(tmp_path, portfolio, default_embedder):
    bad = portfolio / STYLES[2].name / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    rep = ix.add_folder(portfolio)
    assert rep.works == 9 and rep.embedded == 9
    assert [s.path for s in rep.skipped] == [str(bad.resolve())]
    assert rep.skipped[0].reason


def test_csv_portfolio(tmp_path, portfolio, default_embedder):
    rows = ["path,artist,notes"]
    for f in sorted(portfolio.rglob("*.png")):
        rows.append(f"{f.relative_to(tmp_path)},{f.parent.name},x")
    csv = tmp_path / "works.csv"
    csv.write_text("\n".join(rows) + "\n")
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    rep = ix.add_folder(csv)
    assert (rep.works, rep.artists) == (9, 3)




def test_scan_from_bytes_equals_scan_from_path(calibrated_copy, demo, default_embedder):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    paths = sorted((out / "imitations").glob("*.png"))[:3]
    from_paths = ix.scan(paths)
    uploads = [ImageBytes(f"upload-{i}.png", p.read_bytes()) for i, p in enumerate(paths)]
    uploads.append(ImageBytes("junk.png", b"not an image at all"))
    from_bytes = ix.scan(uploads)
    for a, b in zip(from_paths, from_bytes):
        assert b.image.startswith("upload-") and a.sha256 == b.sha256
        assert a.artist == b.artist and [m.to_dict() for m in a.matches] == [m.to_dict() for m in b.matches]
    assert from_bytes[-1].image == "junk.png" and "not a recognised image" in from_bytes[-1].error
    assert not any("/" in e for r in from_bytes for e in [r.image])  # no upload became a path


def test_concurrent_scans_from_threads_agree(calibrated_copy, demo, fresh_embedder):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=fresh_embedder)
    paths = sorted((out / "imitations").glob("*.png"))[:4]
    expected = [r.to_dict() for r in ix.scan(paths)]
    got: list = []
    errors: list = []

    def worker() -> None:
        try:
            got.append([r.to_dict() for r in ix.scan(paths)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [expected] * 4


def test_reads_answer_while_a_writer_holds_the_lock(calibrated_copy, demo, default_embedder, monkeypatch):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    other = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    monkeypatch.setenv("MIMICRY_LOCK_WAIT", "0.2")
    with ix.store.writer():
        r = other.scan([sorted((out / "imitations").glob("*.png"))[0]])[0]
        assert r.matches and other.info().works == ix.info().works
        with pytest.raises(LockedError) as err:
            StyleIndex.open(calibrated_copy, embedder=default_embedder).remove_artist(STYLES[0].name)
        assert err.value.retry_after > 0 and err.value.code == "locked"
    files = sorted(calibrated_copy.iterdir())
    before = {f.name: f.stat().st_mtime_ns for f in files}
    other.scan([sorted((out / "imitations").glob("*.png"))[1]])
    other.info()
    assert {f.name: f.stat().st_mtime_ns for f in sorted(calibrated_copy.iterdir())} == before  # reads wrote nothing


def test_writes_keep_calibration_fresh_and_stale_is_reported(calibrated_copy, demo, default_embedder):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    assert ix.info().calibration == "current"
    before = ix.calibration
    new = out / "late-portfolio" / STYLES[0].name
    new.mkdir(parents=True, exist_ok=True)
    paint(scene(31337), STYLES[0], 31337).save(new / "later.png")
    ix.add_artist(STYLES[0].name, [new])
    after = ix.calibration
    assert ix.info().calibration == "current" and after.generation > before.generation
    assert after.n_background == before.n_background and after.target_rate == before.target_rate

    # A kill between the portfolio commit and the recalibration leaves it stale:
    # reads report it and still answer; they do not recalibrate.
    with ix.store.writer() as w:
        w.commit([], [ix.works(STYLES[0].name)[-1].id])
    info = ix.info()
    assert info.calibration == "stale" and info.warnings
    r = ix.scan([sorted((out / "imitations").glob("*.png"))[0]])[0]
    assert r.warnings and "stale" in r.warnings[0]
    assert ix.info().calibration == "stale"  # the scan did not recalibrate
    ix.calibrate()
    assert ix.info().calibration == "current" and ix.calibration.n_background == before.n_background


def test_scan_model_needs_a_calibrated_index(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    with pytest.raises(NotCalibratedError, match="mimicry calibrate"):
        ix.scan_model([portfolio])
    with pytest.raises(InputError, match="between 0 and 1"):
        ix.calibrate(fpr=0)


def test_model_verdict_pairs_each_supporting_sample_with_its_nearest_work(demo):
    res, _, out = demo
    top = res.fine_tune.findings[0]
    assert top.artist == res.fine_tuned_artist and top.supporting == len(top.pairs) == len(top.samples)
    for pair, sample in zip(top.pairs, top.samples):
        assert pair.sample == sample and pair.nearest.artist == top.artist
        assert 0 < pair.p_value <= top.level + 1e-12
    assert all(e.artist == top.artist and e.work_id >= 1 for e in top.nearest_works)
    d = res.fine_tune.to_dict(paths=False)
    assert "path" not in str(d) and d["findings"][0]["pairs"][0]["nearest"]["sha256"]


def test_scan_model_warns_outside_the_designed_sample_range(calibrated_copy, demo, default_embedder):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    few = sorted((out / "samples-fine-tune").glob("*.png"))[:3]
    verdict = ix.scan_model(few)
    assert verdict.n_samples == 3 and any("fewer than the 8" in w and "not cleared" in w for w in verdict.warnings)
    verdict = ix.scan_model(few[:1])  # one sample is judged too
    assert verdict.n_samples == 1 and any("fewer than the 8" in w for w in verdict.warnings)


def test_results_say_what_the_promise_rests_on(calibrated_copy, demo, default_embedder):
    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    promise = ix.info().promise
    assert promise == {"fpr": 0.01, "negatives": 120, "source": "background", "certified": False,
                       "needed": 300, "can_flag": True}  # 120 background images cannot certify 1%
    r = ix.scan([sorted((out / "unrelated").glob("*.png"))[0]])[0]
    assert r.promise == promise and 0 < r.image_p_value <= 1
    ix.calibrate(fpr=0.03)  # 120 >= ceil(3 / 0.03): certified at 3%
    assert ix.info().promise["certified"] and ix.scan_model([out / "samples-unrelated"]).promise["certified"]
