"""Storage: rows and vectors commit together, a kill at any moment leaves a
usable index, snapshots are immutable, one writer at a time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import consistent, write_portfolio
from mimicry import StyleIndex
from mimicry.errors import CorruptIndexError
from mimicry.store import segments as segment_io
from mimicry.synthetic import STYLES, paint, scene


def test_failed_write_keeps_previous_state(tmp_path, portfolio, default_embedder, monkeypatch):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    paint(scene(99), STYLES[0], 99).save(portfolio / STYLES[0].name / "extra.png")

    real_write = segment_io.write

    def write_then_die(*args):
        real_write(*args)  # the new segment complete on disk...
        raise KeyboardInterrupt  # ...killed before the catalogue commits

    monkeypatch.setattr(segment_io, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ix.add_folder(portfolio)
    monkeypatch.setattr(segment_io, "write", real_write)
    assert consistent(tmp_path / "ix") == (9, 9)
    assert len(list((tmp_path / "ix" / "segments").glob("*.vectors.npy"))) == 2  # the leftover is there
    rep = StyleIndex.open(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    assert rep.embedded == 1 and rep.works == 10
    # The next writer removed the leftover: two committed segments, nothing else.
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 4


def test_snapshots_are_immutable_and_survive_later_writes(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    snap = ix.snapshot()
    assert ix.snapshot() is snap  # nothing committed since: the same snapshot
    with pytest.raises(ValueError):
        snap.vectors[0, 0] = 2.0
    ix.remove_artist(STYLES[0].name)
    assert len(snap.work_ids) == 9 and STYLES[0].name in snap.artists  # the old view stands
    assert len(ix.snapshot().work_ids) == 6 and ix.snapshot().revision > snap.revision


def test_catalogue_and_vectors_that_disagree_are_refused(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    import sqlite3

    db = sqlite3.connect(tmp_path / "ix" / "catalogue.sqlite")
    db.execute("UPDATE meta SET value = '[]' WHERE key = 'segments'")  # works with no vectors
    db.commit()
    db.close()
    with pytest.raises(CorruptIndexError, match="disagree"):
        StyleIndex.open(tmp_path / "ix")


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


@pytest.mark.slow
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


def test_reads_never_create_or_accept_a_broken_catalogue(tmp_path, portfolio, default_embedder):
    from mimicry.errors import NotAnIndexError
    from mimicry.store import Store

    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    only_pin = tmp_path / "only-pin"
    only_pin.mkdir()
    (only_pin / "manifest.json").write_bytes((tmp_path / "ix" / "manifest.json").read_bytes())
    with pytest.raises(NotAnIndexError):
        Store.open(only_pin).snapshot()
    assert sorted(p.name for p in only_pin.iterdir()) == ["manifest.json"]
    (tmp_path / "ix" / "catalogue.sqlite").write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "ix" / f"catalogue.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CorruptIndexError, match="catalogue"):
        StyleIndex.open(tmp_path / "ix")


def test_a_second_creator_keeps_the_first_pin(tmp_path):
    from mimicry.store import Pin, Store

    first = Pin("model-a", "a", "1" * 64, 8, {"version": 1})
    Store.create(tmp_path / "ix", first)
    Store.create(tmp_path / "ix", Pin("model-b", "b", "2" * 64, 8, {"version": 1}))
    assert Store.open(tmp_path / "ix").read_pin().backbone_id == "model-a"


def test_an_unchanged_reindex_commits_nothing(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    snap = ix.snapshot()
    rep = ix.add_folder(portfolio)
    assert rep.unchanged == 9 and ix.snapshot() is snap  # readers keep their snapshot
    import os
    import time

    for f in (portfolio / STYLES[0].name).iterdir():  # touched, same bytes
        os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    rep = ix.add_folder(portfolio)
    assert rep.unchanged == 9 and rep.embedded == 0
    assert ix.snapshot().generation == snap.generation  # no new vectors file
