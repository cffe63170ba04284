"""Lookback at scale: a history of 100,000 synthetic unit vectors of the
default dimension, re-screened for one artist of a small calibrated index
(the demo's, built in a temp folder unless ``--demo`` names one already built).

The history is made to look like a hub's: most uploads near the background's
images (ordinary uploads), a share near other artists' works, 1% near the
screened artist's works (imitations, the ones a lookback must find), and
model sample sets (16 samples each), a few of them of the screened artist.
Prints the time of the re-screen, its ratio to the 10 s target, the
candidates the bound let through to the full image test, and the cases opened.

    python scripts/bench_lookback.py [--n 100000] [--models 100] [--demo DIR] [--check]

``--check`` also runs the full image test on every vector and says whether the
fast path flagged exactly the same images (slow: minutes at 100,000).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mimicry.index import StyleIndex  # noqa: E402
from mimicry.moderation import lookback, rescreen  # noqa: E402
from mimicry.moderation.db import ModerationDB  # noqa: E402

TARGET_S = 10.0


def near(rng: np.random.Generator, centres: np.ndarray, n: int, noise: float) -> np.ndarray:
    """``n`` unit vectors, each a random centre plus Gaussian noise of norm about ``noise``."""
    if n == 0:
        return np.zeros((0, centres.shape[1]), np.float32)
    v = centres[rng.integers(0, len(centres), n)] + rng.normal(0, noise / np.sqrt(centres.shape[1]),
                                                                (n, centres.shape[1]))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def history(snapshot, artist: str, n: int, models: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """(single uploads, model sample sets) as described in the module docstring."""
    rng = np.random.default_rng(seed)
    col = snapshot.artists.index(artist)
    own = snapshot.rows(snapshot.columns[col])
    others = snapshot.rows(np.concatenate([c for j, c in enumerate(snapshot.columns) if j != col]))
    singles = n - 16 * models
    n_imit, n_other = singles // 100, singles // 50
    parts = [near(rng, snapshot.background, singles - n_imit - n_other, 0.6),
             near(rng, others, n_other, 0.6), near(rng, own, n_imit, 0.5)]
    images = np.concatenate(parts)[rng.permutation(singles)]
    sets = [near(rng, own if m % 10 == 0 else snapshot.background, 16, 0.5) for m in range(models)]
    return images, sets


def insert(mdb: ModerationDB, images: np.ndarray, sets: list[np.ndarray]) -> None:
    """The history as recorded scans: one scan per single upload, one per model."""
    now = time.time()
    base = int(mdb.read("SELECT coalesce(max(id), 0) FROM scans")[0][0])  # after the demo's own scans
    with mdb.transaction() as db:
        db.executemany("INSERT INTO scans(id, at, kind, upload_id, uploader, tier, result) "
                       "VALUES(?, ?, 'image', ?, ?, 'not-flagged', '{}')",
                       [(base + i + 1, now, f"up-{i}", f"user-{i % 5000}") for i in range(len(images))])
        db.executemany("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                       "VALUES(?, 0, ?, 'x.png', ?, 'not-flagged')",
                       [(base + i + 1, f"{i:064x}", v.tobytes()) for i, v in enumerate(images)])
        for m, vecs in enumerate(sets):
            sid = base + len(images) + m + 1
            db.execute("INSERT INTO scans(id, at, kind, model_id, tier, result) VALUES(?, ?, 'model', ?, 'none', '{}')",
                       (sid, now, f"model-{m}"))
            db.executemany("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                           "VALUES(?, ?, ?, ?, ?, 'sample')",
                           [(sid, p, f"m{m}-{p}", f"s{p}.png", v.tobytes()) for p, v in enumerate(vecs)])


def demo_index(given: Path | None, tmp: Path) -> Path:
    if given is not None:
        return given / "index"
    from mimicry.demo import run_demo

    print("building the demo index (embeds its images once) ...", flush=True)
    run_demo(tmp / "demo", echo=lambda _line: None)
    return tmp / "demo" / "index"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--demo", type=Path, default=None, help="a folder `mimicry demo` built (its index/)")
    ap.add_argument("--check", action="store_true", help="also the full image test on every vector")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lookback-"))
    try:
        folder = tmp / "index"
        shutil.copytree(demo_index(args.demo, tmp), folder, ignore=shutil.ignore_patterns("lock"))
        snap = StyleIndex.open(folder).snapshot()
        artist = snap.artists[0]
        images, sets = history(snap, artist, args.n, args.models)
        mdb = ModerationDB(folder)
        t0 = time.perf_counter()
        insert(mdb, images, sets)
        print(f"history: {len(images)} single uploads and {len(sets)} models x 16 samples, dim {images.shape[1]}, "
              f"inserted in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        done = lookback.run(mdb, snap, lookback.begin(mdb, artist), rescreen.ModelTest())
        took = time.perf_counter() - t0
        print(f"lookback for {artist!r}: {done.state}, {done.done}/{done.total} vectors, {done.opened} cases opened "
              f"in {took:.2f} s ({took / TARGET_S:.2f} of the {TARGET_S:.0f} s target)")
        bound = rescreen.Bound.of(snap, snap.artists.index(artist))
        print(f"full image test ran on {int(bound.passes(images).sum())} of {len(images)} uploads")
        if args.check:
            t0 = time.perf_counter()
            full = np.concatenate([rescreen.flagged_as(snap, images[i:i + 4096]) for i in range(0, len(images), 4096)])
            fast = rescreen.screen_images(snap, images, artist)
            same = np.array_equal(fast, full == 0)
            print(f"full scan of every vector: {int((full == 0).sum())} flagged as {artist!r} "
                  f"({time.perf_counter() - t0:.1f} s); the fast path's {int(fast.sum())}: "
                  f"{'the same' if same else 'DIFFERENT'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
