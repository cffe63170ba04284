"""The index: incremental by content hash, pinned to its model, crash-safe."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_portfolio
from mimicry import IndexMismatchError, StyleIndex
from mimicry import vectors as vector_io
from mimicry.synthetic import STYLES, paint, scene


def consistent(folder: Path) -> tuple[int, int]:
    """Opens the index fresh and checks rows and vectors agree; returns (works, vectors)."""
    with StyleIndex.open(folder) as ix:
        ids, vecs = ix.vectors()
        works = ix.works()
        assert sorted(ids.tolist()) == sorted(w.id for w in works)
        if len(vecs):
            assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
        return len(works), len(ids)


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
    with pytest.raises(KeyError):
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


class OtherModel:
    """Same dimension as the default, other weights: must not share an index."""

    model_id = "efficientnet-lite0"
    weights_sha256 = "0" * 64
    device = "cpu"

    def __init__(self, dim):
        self.dim = dim


def test_wrong_backbone_is_a_clear_error(tmp_path, portfolio, default_embedder):
    StyleIndex.create(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    with pytest.raises(IndexMismatchError, match="built with efficientnet-lite0"):
        StyleIndex.open(tmp_path / "ix", embedder=OtherModel(default_embedder.dim))
    with pytest.raises(IndexMismatchError):
        StyleIndex.create(tmp_path / "ix", embedder=OtherModel(default_embedder.dim))


def test_failed_write_keeps_previous_state(tmp_path, portfolio, default_embedder, monkeypatch):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    paint(scene(99), STYLES[0], 99).save(portfolio / STYLES[0].name / "extra.png")

    real_write = vector_io.write

    def write_then_die(folder, generation, index):
        real_write(folder, generation, index)  # new file complete on disk...
        raise KeyboardInterrupt  # ...killed before the catalogue commits

    monkeypatch.setattr(vector_io, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ix.add_folder(portfolio)
    monkeypatch.setattr(vector_io, "write", real_write)
    assert consistent(tmp_path / "ix") == (9, 9)
    rep = StyleIndex.open(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    assert rep.embedded == 1 and rep.works == 10
    assert len(list((tmp_path / "ix").glob("vectors.*.faiss"))) == 1


def committed_generation(folder: Path) -> int:
    """The generation the catalogue has committed (0 before the first commit)."""
    import sqlite3

    db = sqlite3.connect(f"file:{folder / 'catalogue.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        row = None
    finally:
        db.close()
    return int(row[0]) if row else 0


KILL_SCRIPT = """
import sys
from mimicry import StyleIndex
ix = StyleIndex.create(sys.argv[1], device="cpu")
print("ready", flush=True)
ix.add_folder(sys.argv[2], batch_size=2, checkpoint=2)
"""


def test_kill_at_any_moment_leaves_a_usable_index(tmp_path):
    """SIGKILL an indexing process at several moments; every time the index
    opens, rows and vectors agree, and a rerun completes the job."""
    portfolio = write_portfolio(tmp_path / "p", artists=2, works=20)
    folder = tmp_path / "ix"
    delays = [0.0, 0.3, 0.4, 0.5]
    seen = []
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder), str(portfolio)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        if not seen:  # first kill: right after the first commit, whatever the machine's speed
            deadline = time.time() + 120
            while committed_generation(folder) == 0 and time.time() < deadline:
                time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        works, vecs = consistent(folder)
        seen.append(works)
    assert seen == sorted(seen)  # committed work is never lost
    assert 0 < seen[0] < 40  # the first kill landed mid-run
    with StyleIndex.open(folder) as ix:
        rep = ix.add_folder(portfolio)
    assert rep.works == 40 and rep.embedded == 40 - seen[-1]
    assert consistent(folder) == (40, 40)
