"""Vectors as immutable segments: a write adds a file and never rewrites the
base; dead rows are masked until a merge; merges keep the count bounded;
readers map the files read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from helpers import unit
from mimicry.store import Pin, Store
from mimicry.store import segments as segment_io
from mimicry.store.writer import NewWork

DIM = 8


def new_store(folder: Path) -> Store:
    return Store.create(folder, Pin("test-model", "test", "0" * 64, DIM, {"version": 1}))


def add(store: Store, artist: str, n: int, seed: int) -> list[int]:
    vecs = unit(np.random.default_rng(seed).normal(size=(n, DIM)))
    works = [(NewWork(artist, f"/{artist}/{seed}-{i}.png", f"{seed:032x}{i:032x}", 1, 1), v)
             for i, v in enumerate(vecs)]
    with store.writer() as w:
        w.commit(works, [])
        by_path = {x.path: x.id for x in w.works(artist)}
    return [by_path[nw.path] for nw, _ in works]


def committed(folder: Path) -> list[segment_io.SegmentRef]:
    db = sqlite3.connect(folder / "catalogue.sqlite")
    try:
        return segment_io.decode(db.execute("SELECT value FROM meta WHERE key='segments'").fetchone()[0])
    finally:
        db.close()


def test_a_write_adds_a_segment_and_leaves_the_base_alone(tmp_path):
    store = new_store(tmp_path / "ix")
    add(store, "a", 200, 0)
    base = tmp_path / "ix" / "segments" / f"{committed(tmp_path / 'ix')[0].n:08d}.vectors.npy"
    before = (base.stat().st_ino, base.stat().st_mtime_ns)
    add(store, "b", 3, 1)
    assert [r.rows for r in committed(tmp_path / "ix")] == [200, 3]
    assert (base.stat().st_ino, base.stat().st_mtime_ns) == before  # not rewritten
    snap = store.snapshot()
    assert len(snap.work_ids) == 203 and snap.artists == ("a", "b")


def test_merges_bound_the_segments_and_drop_dead_rows(tmp_path):
    store = new_store(tmp_path / "ix")
    ids = []
    for i in range(segment_io.MAX_SEGMENTS + 3):
        ids += add(store, f"artist-{i % 3}", 5, i)
        assert len(committed(tmp_path / "ix")) <= segment_io.MAX_SEGMENTS
    before = store.snapshot()
    expected = dict(zip(before.work_ids.tolist(), np.asarray(before.vectors)))
    # Remove a few: masked, not rewritten (under the dead-row share).
    refs = committed(tmp_path / "ix")
    with store.writer() as w:
        w.commit([], ids[:3])
    assert committed(tmp_path / "ix") == refs
    snap = store.snapshot()
    assert len(snap.work_ids) == len(ids) - 3 and not set(ids[:3]) & set(snap.work_ids.tolist())
    # Past the dead share, one merged segment of exactly the live rows.
    inputs = committed(tmp_path / "ix")
    with store.writer() as w:
        w.commit([], ids[3:len(ids) // 2])
    refs = committed(tmp_path / "ix")
    assert len(refs) == 1 and refs[0].rows == len(ids) - len(ids) // 2
    snap = store.snapshot()
    for work_id, vec in zip(snap.work_ids.tolist(), snap.vectors):
        np.testing.assert_array_equal(vec, expected[work_id])
    def files() -> set[int]:
        return {int(p.name.split(".")[0]) for p in (tmp_path / "ix" / "segments").iterdir()}

    # The merge's inputs stay one more commit (a reader may be loading them), then go.
    assert files() == {r.n for r in inputs} | {refs[0].n}
    add(store, "artist-0", 1, 99)
    assert files() == {r.n for r in committed(tmp_path / "ix")}


def test_readers_map_the_vectors_read_only(tmp_path):
    store = new_store(tmp_path / "ix")
    add(store, "a", 50, 0)
    snap = Store.open(tmp_path / "ix").snapshot()
    assert isinstance(snap.vectors, np.memmap) or isinstance(snap.vectors.base, np.memmap)
    with pytest.raises(ValueError):
        snap.vectors[0, 0] = 1.0


def test_small_writes_never_rewrite_the_large_base_segment(tmp_path):
    """Past the segment count, neighbours with the fewest rows merge: a base of
    500 works stays the same file through 60 one-work commits, the count stays
    bounded, and every vector stays where its work is."""
    folder = tmp_path / "ix"
    store = new_store(folder)
    add(store, "base", 500, seed=0)
    base = committed(folder)[0]
    rewritten_rows = 0
    for i in range(60):
        before = {r.n for r in committed(folder)}
        add(store, f"artist-{i % 4}", 1, seed=100 + i)
        refs = committed(folder)
        assert refs[0] == base and len(refs) <= segment_io.MAX_SEGMENTS
        rewritten_rows += sum(r.rows for r in refs if r.n not in before) - 1
    assert rewritten_rows < 60 * 8  # small merges only: a base rewrite alone would be 500
    snap = store.snapshot()
    fresh = Store.open(folder).snapshot()
    assert len(snap.work_ids) == 560
    assert np.array_equal(snap.work_ids, fresh.work_ids) and np.array_equal(snap.vectors, fresh.vectors)


def same_state(a, b) -> None:
    """Two snapshots of one committed state agree in everything a reader uses."""
    assert (a.generation, a.revision, a.artists) == (b.generation, b.revision, b.artists)
    assert np.array_equal(a.work_ids, b.work_ids) and np.array_equal(a.vectors, b.vectors)
    assert a.works == b.works and dict(a.artist_counts) == dict(b.artist_counts)
    assert np.array_equal(a.row_artist, b.row_artist)
    assert [c.tolist() for c in a.columns] == [c.tolist() for c in b.columns]
    assert (a.stored_calibration is None) == (b.stored_calibration is None)
    assert (a.background is None) == (b.background is None)


def test_a_writer_advances_its_snapshot_to_exactly_what_a_reader_reads(tmp_path, monkeypatch):
    """After each commit the writer builds the new state from the old one and
    the commit (no re-read of every work and vector), and hands it to readers
    of the same store: it must equal what a fresh reader reads from disk,
    through adds, removals, an artist's removal and merges."""
    folder = tmp_path / "ix"
    store = new_store(folder)
    rng = np.random.default_rng(3)
    for a in range(4):
        add(store, f"artist-{a}", 5, seed=a)
    with store.writer() as w:
        w.set_background(unit(rng.normal(size=(6, DIM))), np.arange(6))
    loads = []
    real = Store._load
    monkeypatch.setattr(Store, "_load", lambda self, *a, **k: loads.append(1) or real(self, *a, **k))
    advanced = 0
    for step in range(40):
        snap = store.snapshot()
        live = snap.work_ids.tolist()
        n_add = int(rng.integers(0, 6))
        gone = [int(i) for i in rng.choice(live, min(len(live), int(rng.integers(0, 4))), replace=False)]
        artist = f"artist-{int(rng.integers(0, 6))}"
        works = [(NewWork(artist, f"/{step}/{i}.png", f"{step:032x}{i:032x}", i + 1, step), v)
                 for i, v in enumerate(unit(rng.normal(size=(n_add, DIM))))]
        with store.writer() as w:
            before = len(loads)
            w.commit(works, gone)
            advanced += len(loads) == before  # no full read for this commit
            mine = w.snapshot()
        fresh = Store.open(folder).snapshot()
        same_state(mine, fresh)
        assert store.snapshot() is mine  # readers of this store take the writer's state as it is
        if step == 20:
            with store.writer() as w:  # an artist's row goes with its last works
                name = w.snapshot().artists[0]
                w.commit([], [i for i, wk in w.snapshot().works.items() if wk.artist == name],
                         remove_artist=name)
            same_state(store.snapshot(), Store.open(folder).snapshot())
    assert advanced >= 20  # most commits advanced; merges (one segment) read it again, mapped
    assert len(committed(folder)) <= segment_io.MAX_SEGMENTS + 1


def test_readers_keep_up_with_back_to_back_merging_commits(tmp_path, monkeypatch):
    """Past the segment count nearly every commit merges and deletes files a
    reader may be loading: readers must still never fail (the replaced list's
    files stay one commit; a file gone while commits land is read again, not
    called missing), here with the retries cut to 2."""
    import threading

    monkeypatch.setenv("MIMICRY_SNAPSHOT_RETRIES", "2")
    monkeypatch.setenv("MIMICRY_SNAPSHOT_RETRY", "0.001")
    folder = tmp_path / "ix"
    store = new_store(folder)
    failures: list[Exception] = []
    loads = [0]
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                Store.open(folder).snapshot()
                loads[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(90):
            add(store, f"artist-{i % 3}", 5, 1000 + i)
    finally:
        done.set()
        t.join()
    assert loads[0] > 12 and not failures, failures[:3]
    assert len(Store.open(folder).snapshot().work_ids) == 450


def test_the_growth_buffer_is_let_go_when_the_state_is_read_afresh(tmp_path):
    """Commits append into one buffer; once a writer reads the state from disk
    again (here after storing a background), nothing keeps that buffer alive."""
    import gc
    import weakref

    folder = tmp_path / "ix"
    store = new_store(folder)
    add(store, "a", 20, 0)
    add(store, "b", 20, 1)
    add(store, "c", 5, 2)  # a third segment: advanced into the buffer
    snap = store.snapshot()
    assert store._growth is not None and np.shares_memory(snap.vectors, store._growth[0])
    ref = weakref.ref(store._growth[0])
    del snap
    with store.writer() as w:
        w.set_background(unit(np.random.default_rng(0).normal(size=(3, DIM))), np.arange(3))
    gc.collect()
    assert ref() is None and len(store.snapshot().work_ids) == 45
