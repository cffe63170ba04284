"""Approximate indexes (IVF, HNSW): recall against exact search, similarities
re-ranked exactly, removed works masked and added ones searched exactly until
a rebuild, rebuilds past their thresholds, a kill mid-build costs nothing,
concurrent searches agree, and ``auto`` stays exact for small registries."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import unit
from mimicry.scoring import score
from mimicry.store import Pin, Store
from mimicry.store import ann as ann_io
from mimicry.store import ann_builds, ann_faiss
from mimicry.store.snapshot import exact_search
from mimicry.store.writer import NewWork

DIM = 24


def clustered(n: int, artists: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(artists, DIM)))
    owner = rng.integers(0, artists, n)
    return unit(centres[owner] + 0.35 * rng.normal(size=(n, DIM))), owner


def store_of(folder: Path, kind: str, n: int = 3000, artists: int = 150, seed: int = 0) -> Store:
    store = Store.create(folder, Pin("test-model", "test", "0" * 64, DIM, {"version": 1}, index_type=kind))
    add(store, *clustered(n, artists, seed), tag=seed)
    return store


def add(store: Store, vecs: np.ndarray, owner: np.ndarray, tag: int = 0) -> list[int]:
    works = [(NewWork(f"artist-{a:03d}", f"/{tag}/{i}.png", f"{tag:032x}{i:032x}", 1, 1), v)
             for i, (v, a) in enumerate(zip(vecs, owner))]
    with store.writer() as w:
        w.commit(works, [])
        by_path = {x.path: x.id for x in w.works()}
    return [by_path[nw.path] for nw, _ in works]


def in_use(folder: Path) -> str | None:
    """The file of the approximate index the catalogue names (None: none)."""
    db = sqlite3.connect(folder / "catalogue.sqlite")
    try:
        row = db.execute("SELECT value FROM meta WHERE key='ann'").fetchone()
    finally:
        db.close()
    info = ann_io.decode(row[0] if row else None, folder)
    return info.file if info is not None else None


def recall(snap, queries: np.ndarray) -> float:
    _, exact = exact_search(snap.vectors, queries, 10)
    _, got = snap.search(queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), got.tolist())]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_approximate_index_reaches_its_recall_with_exact_similarities(tmp_path, kind):
    store = store_of(tmp_path / "ix", kind)
    infos = json.loads((tmp_path / "ix" / "index_infos.json").read_text())
    assert infos["type"] == kind and infos["vectors"] == 3000 and infos["recall_at_10"] >= 0.95
    assert set(infos) >= {"params", "search", "training_size", "memory_bytes", "build_s"}
    snap = store.snapshot()
    assert snap.ann is not None and snap.ann.info.type == kind
    queries, _ = clustered(200, 150, seed=99)  # held out: not in the index
    assert recall(snap, queries) >= 0.93
    sims, rows = snap.search(queries, 10)
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", queries, snap.vectors[rows]), atol=1e-5)
    # The artists a scan reports are those exact scoring finds, nearly always.
    top_ann = score(snap, queries, need=1).raw.argmax(axis=1)
    top_exact = score(snap, queries).raw.argmax(axis=1)
    assert (top_ann == top_exact).mean() >= 0.97


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_removed_works_are_masked_added_ones_found_until_a_rebuild(tmp_path, kind):
    folder = tmp_path / "ix"
    store = store_of(folder, kind)
    first = json.loads((folder / "index_infos.json").read_text())["file"]
    snap = store.snapshot()
    gone = snap.work_ids[:100].tolist()
    with store.writer() as w:
        w.commit([], gone)
    new_vecs, new_owner = clustered(50, 150, seed=7)
    new_ids = add(store, new_vecs, new_owner, tag=7)
    snap = store.snapshot()
    assert json.loads((folder / "index_infos.json").read_text())["file"] == first  # not rebuilt yet
    assert snap.ann.dead == 100 and len(snap.ann.delta_rows) == 50
    _, rows = snap.search(np.concatenate([snap.vectors[:50], new_vecs]), 5)
    found = set(snap.work_ids[rows[rows >= 0]].tolist())
    assert not found & set(gone)  # masked
    _, rows = snap.search(new_vecs, 1)
    assert snap.work_ids[rows[:, 0]].tolist() == new_ids  # each new work is its own nearest
    # Past the dead share the index is rebuilt over the live works only.
    with store.writer() as w:
        w.commit([], snap.work_ids[:700].tolist())
    infos = json.loads((folder / "index_infos.json").read_text())
    assert infos["file"] != first and infos["vectors"] == 3000 - 100 + 50 - 700
    assert store.snapshot().ann.dead == 0
    # The replaced index's files stay (a reader of the state before may load them) until the next commit.
    assert len(list((folder / "ann").glob(first + "*"))) == 2
    with store.writer() as w:
        w.commit([], store.snapshot().work_ids[:1].tolist())
    assert not list((folder / "ann").glob(first + "*"))


def test_a_kill_while_building_leaves_results_intact(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    store = store_of(folder, "ivf")
    before = json.loads((folder / "index_infos.json").read_text())
    real = ann_io.write

    def die_after_the_file(folder_, index, ids, info):
        import faiss

        (folder_ / ann_io.FOLDER / info.file).parent.mkdir(exist_ok=True)
        faiss.write_index(index, str(folder_ / ann_io.FOLDER / info.file))
        raise KeyboardInterrupt

    monkeypatch.setattr(ann_io, "write", die_after_the_file)
    snap = store.snapshot()
    with pytest.raises(KeyboardInterrupt):
        with store.writer() as w:
            w.commit([], snap.work_ids[:800].tolist())  # past the dead share: a rebuild starts
    monkeypatch.setattr(ann_io, "write", real)
    assert json.loads((folder / "index_infos.json").read_text()) == before  # still the old one
    snap = Store.open(folder).snapshot()
    assert len(snap.work_ids) == 2200 and snap.ann is not None and snap.ann.dead == 800
    queries, _ = clustered(50, 150, seed=5)
    _, rows = snap.search(queries, 10)
    assert (rows >= 0).all() and recall(snap, queries) >= 0.9
    for f in ann_io.files(folder, before["file"]):  # its files gone: exact
        f.unlink()
    assert Store.open(folder).snapshot().ann is None


def test_concurrent_searches_agree(tmp_path):
    snap = store_of(tmp_path / "ix", "ivf").snapshot()
    queries, _ = clustered(64, 150, seed=3)
    want = snap.search(queries, 10)
    out: list = []

    def run() -> None:
        for _ in range(5):
            out.append(snap.search(queries, 10))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 20 and all(np.array_equal(r, want[1]) for _, r in out)


def test_auto_stays_exact_below_its_size_and_flat_drops_the_index(tmp_path):
    assert ann_io.resolve("auto", ann_io.AUTO_FLAT_MAX - 1) == "flat"
    assert ann_io.resolve("auto", ann_io.AUTO_FLAT_MAX) == "hnsw"
    assert ann_io.resolve("hnsw", ann_io.MIN_ANN - 1) == "flat"
    store = store_of(tmp_path / "ix", "auto", n=1500)
    assert store.snapshot().ann is None and not (tmp_path / "ix" / "index_infos.json").exists()
    with store.writer() as w:
        w.set_index_type("hnsw")
    assert store.snapshot().ann.info.type == "hnsw" and store.read_pin().index_type == "hnsw"
    with store.writer() as w:
        w.set_index_type("flat")
    assert store.snapshot().ann is None and not (tmp_path / "ix" / "index_infos.json").exists()


def test_one_writer_builds_once_at_its_end(tmp_path, monkeypatch):
    """Checkpoint commits of one indexing run do not each rebuild the index."""
    store = Store.create(tmp_path / "ix", Pin("test-model", "test", "0" * 64, DIM, {"version": 1},
                                              index_type="ivf"))
    calls = []
    real = ann_faiss.create
    monkeypatch.setattr(ann_faiss, "create", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    with store.writer() as w:
        for part in range(3):
            vecs, owner = clustered(1000, 50, seed=part)
            w.commit([(NewWork(f"artist-{a:03d}", f"/{part}/{i}.png", f"{part:032x}{i:032x}", 1, 1), v)
                      for i, (v, a) in enumerate(zip(vecs, owner))], [])
        assert calls == []
    assert calls == [3000] and store.snapshot().ann.info.vectors == 3000


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("spectrum", ["decaying", "flat"])
def test_wide_vectors_reach_the_recall_with_or_without_pca_and_stay_masked(tmp_path, kind, spectrum):
    """Vectors wider than the PCA width (the default backbone's case): with a
    decaying spectrum (real descriptors) the index codes the projection; with a
    flat one, where the projection loses the neighbour order, it is rebuilt at
    full width. Either way it reaches the recall, and the search parameters and
    the selector reach the inner index."""
    rng = np.random.default_rng(4)
    wide = 320
    scale = np.r_[np.ones(48), np.full(wide - 48, 0.05)] if spectrum == "decaying" else np.ones(wide)
    centres = unit(rng.normal(size=(60, wide)) * scale)
    owner = rng.integers(0, 60, 2500)
    vecs = unit(centres[owner] + 0.3 * rng.normal(size=(2500, wide)) * scale)
    store = Store.create(tmp_path / "ix", Pin("wide", "wide", "0" * 64, wide, {"version": 1}, index_type=kind))
    works = [(NewWork(f"artist-{a:02d}", f"/{i}.png", f"{i:064x}", 1, 1), v)
             for i, (v, a) in enumerate(zip(vecs, owner))]
    with store.writer() as w:
        w.commit(works, [])
    snap = store.snapshot()
    assert snap.ann.info.recall_at_10 >= 0.95
    assert snap.ann.info.params["pca"] == (ann_faiss.PCA_DIM if spectrum == "decaying" else None)
    gone = snap.work_ids[::10].tolist()  # 10%: masked, not rebuilt
    with store.writer() as w:
        w.commit([], gone)
    snap = store.snapshot()
    assert snap.ann.dead == len(gone)
    _, rows = snap.search(vecs[::7], 20)
    assert (rows >= 0).all() and not set(snap.work_ids[rows].ravel().tolist()) & set(gone)


def test_readers_see_a_rebuilt_index_and_failed_builds_are_retried(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    store = Store.create(folder, Pin("test-model", "test", "0" * 64, DIM, {"version": 1}, index_type="ivf"))
    reader = Store.open(folder)
    vecs, owner = clustered(3000, 150, seed=0)
    with store.writer() as w:
        w.commit([(NewWork(f"artist-{a:03d}", f"/{i}.png", f"{i:064x}", 1, 1), v)
                  for i, (v, a) in enumerate(zip(vecs, owner))], [])
        assert reader.snapshot().ann is None  # committed, not yet indexed
    assert reader.snapshot().ann is not None  # the build moved the revision
    # A build that fails is logged, the commits stand, and the next writer retries it.
    snap = store.snapshot()
    real = ann_faiss.create
    monkeypatch.setattr(ann_faiss, "create", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no room")))
    with store.writer() as w:
        w.commit([], snap.work_ids[:900].tolist())  # past the dead share
    assert len(store.snapshot().work_ids) == 2100 and store.snapshot().ann.dead == 900
    monkeypatch.setattr(ann_faiss, "create", real)
    (folder / "ann" / "stray.faiss.tmp").write_bytes(b"x" * 10)  # an interrupted build's leftover
    with store.writer():
        pass
    snap = store.snapshot()
    assert snap.ann.dead == 0 and snap.ann.info.vectors == 2100
    assert not (folder / "ann" / "stray.faiss.tmp").exists()


def test_a_repinned_index_never_searches_the_old_codes(tmp_path):
    folder = tmp_path / "ix"
    # 1,500 works: past MIN_ANN, so an HNSW is built both before and after the re-pin.
    store = store_of(folder, "hnsw", n=1500, artists=75)
    old = json.loads((folder / "index_infos.json").read_text())["file"]
    snap = store.snapshot()
    fresh, _ = clustered(1500, 75, seed=42)  # the same works, embedded another way
    pin = Pin("test-model", "test", "0" * 64, DIM, {"version": 2}, index_type="hnsw")
    with store.writer() as w:
        w.replace_all(pin, snap.work_ids.tolist(), fresh, [])
    snap = store.snapshot()
    assert snap.ann.info.file != old and not list((folder / "ann").glob(old + "*"))
    _, rows = snap.search(fresh[:20], 1)
    assert rows[:, 0].tolist() == list(range(20))  # found in the new vectors


def test_a_write_that_does_not_rebuild_does_not_reread_the_index(tmp_path, monkeypatch):
    store = store_of(tmp_path / "ix", "ivf")
    assert store.snapshot().ann is not None
    import faiss

    reads = []
    real = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    add(store, *clustered(20, 150, seed=9), tag=9)  # under the rebuild threshold
    snap = store.snapshot()
    assert reads == [] and len(snap.ann.delta_rows) == 20


def _held_build(monkeypatch):
    """Makes the next builds stop after writing their files, until released:
    (files written, release, number of builds started)."""
    written, release, builds = threading.Event(), threading.Event(), []
    real = ann_io.write
    # A writer that finds this build holding the build lock waits LOCK_WAIT_S
    # (2 s, for brief leftover cleaning) before it leaves its own build to it;
    # here the lock stays held until released, so that wait only waits: the
    # outcome (its build skipped) is the same at 0.3 s.
    monkeypatch.setattr(ann_builds, "LOCK_WAIT_S", 0.3)

    def write_then_wait(*a, **k):
        builds.append(a[3].file)
        real(*a, **k)
        written.set()
        assert release.wait(60)

    monkeypatch.setattr(ann_io, "write", write_then_wait)
    return written, release, builds


def test_a_build_runs_outside_the_write_lock(tmp_path, monkeypatch):
    """Writes and reads go on while the approximate index is built; a second
    build does not start beside it; leftovers cleaning spares its files; what
    changed during the build is masked or searched exactly once it is in."""
    folder = tmp_path / "ix"
    store = store_of(folder, "ivf")
    old = in_use(folder)
    written, release, builds = _held_build(monkeypatch)
    store.ann_in_background = True  # as the service runs it
    snap = store.snapshot()
    with store.writer() as w:
        w.commit([], snap.work_ids[:800].tolist())  # past the dead share: a build is due
    assert written.wait(60)  # the writer returned; its build is under way, files written
    other = Store.open(folder)
    new_vecs, owner = clustered(50, 150, seed=7)
    added = add(other, new_vecs, owner, tag=7)  # takes the write lock at once, cleans leftovers
    assert len(builds) == 1  # its own build was skipped: one is running
    during = other.snapshot()
    assert in_use(folder) == old and during.ann.dead == 800
    assert len(during.work_ids) == 2250 and list(Path(folder, "ann").glob(builds[0] + "*"))
    release.set()
    for _ in range(600):
        if in_use(folder) != old:
            break
        threading.Event().wait(0.1)
    after = Store.open(folder).snapshot()
    assert after.ann.info.file == builds[0] and after.ann.info.vectors == 2200
    assert after.ann.dead == 0 and len(after.ann.delta_rows) == 50
    _, rows = after.search(new_vecs, 1)
    assert after.work_ids[rows[:, 0]].tolist() == added  # added during the build: found exactly
    assert list(Path(folder, "ann").glob(old + "*"))  # replaced: kept for readers until the next commit
    for _ in range(600):  # the builder lets go of the build lock
        with ann_io.building(folder) as idle:
            if idle:
                break
        threading.Event().wait(0.1)
    add(Store.open(folder), *clustered(5, 150, seed=8), tag=8)
    assert not list(Path(folder, "ann").glob(old + "*"))


def test_a_build_from_before_a_repin_is_never_installed(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    store = store_of(folder, "hnsw", n=1500, artists=75)
    written, release, builds = _held_build(monkeypatch)
    store.ann_in_background = True
    snap = store.snapshot()
    with store.writer() as w:  # 400 of 1,500: past the dead share, 1,100 left (past MIN_ANN): a build
        w.commit([], snap.work_ids[:400].tolist())
    assert written.wait(60)
    with Store.open(folder).writer(wait_s=5) as w:  # the lock is free during the build
        w.set_index_type("flat")
    release.set()
    for _ in range(100):
        threading.Event().wait(0.1)
        with ann_io.building(folder) as idle:
            if idle:
                break
    assert builds and in_use(folder) is None
    assert Store.open(folder).snapshot().ann is None


def test_writes_during_a_build_that_call_for_another_get_it(tmp_path, monkeypatch):
    """A writer that finds a build running leaves its own to it: when what it
    added calls for another build, the running builder makes it next."""
    folder = tmp_path / "ix"
    store = store_of(folder, "ivf")
    written, release, builds = _held_build(monkeypatch)
    snap = store.snapshot()

    def remove() -> None:
        with store.writer() as w:  # inline build, as the CLI runs it
            w.commit([], snap.work_ids[:800].tolist())

    t = threading.Thread(target=remove)
    t.start()
    assert written.wait(60)
    add(Store.open(folder), *clustered(1500, 150, seed=7), tag=7)  # past the new share; its build skipped
    assert len(builds) == 1
    release.set()
    t.join(120)
    after = Store.open(folder).snapshot()
    assert len(builds) == 2 and after.ann.info.vectors == 3700 and len(after.ann.delta_rows) == 0
    assert not ann_io.needs_rebuild(after.ann, after.pin.index_type, len(after.work_ids))


def test_a_reader_loads_the_index_of_the_state_it_read(tmp_path, monkeypatch):
    """A reader reads the committed state in one transaction; an install that
    lands before it has loaded the files that state names must neither hand it
    the new index (of other vectors) nor take the old one's files away."""
    from mimicry.store import segments as segment_io

    folder = tmp_path / "ix"
    store = store_of(folder, "ivf", n=1500, artists=60)
    first = in_use(folder)
    reader = Store.open(folder)
    real, fired = segment_io.live, []

    def live_then_install(*a, **k):
        out = real(*a, **k)
        if not fired:  # once: the reader has read the state, now a rebuild is installed
            fired.append(1)
            snap = store.snapshot()
            with store.writer() as w:
                w.commit([], snap.work_ids[:400].tolist())  # past the dead share: rebuilt inline
            assert in_use(folder) != first
        return out

    monkeypatch.setattr(segment_io, "live", live_then_install)
    snap = reader.snapshot()
    assert fired and len(snap.work_ids) == 1500  # the state before the removal...
    assert snap.ann is not None and snap.ann.info.file == first  # ...with its own index, not exact
    assert snap.ann.dead == 0 and len(snap.ann.delta_rows) == 0
    monkeypatch.setattr(segment_io, "live", real)
    after = reader.snapshot()
    assert len(after.work_ids) == 1100 and after.ann.info.file == in_use(folder) != first
