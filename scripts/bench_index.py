"""Approximate indexes at hub scale: build time, memory, latency and recall,
flat against IVF and HNSW, side by side in one run; and a calibrated scan and
a calibration against a large registry, dense exact scoring against
neighbour scoring.

Run: .venv/bin/python scripts/bench_index.py --vectors 10000 100000 [1000000]
     [--types flat ivf hnsw] [--reference DIR] [--scan 100000] [--commits 100000]
     [--write-during-build 100000]

Vectors are synthetic but shaped like the default descriptor: artists are
clusters of 20-200 works, plus 20% unclustered works, drawn in the principal
basis of real descriptors with each component's between-artist and
within-artist variance measured on real works (``--reference``: a folder of
artists' folders, embedded once through the vector cache; without it, a
power-law spectrum fitted to them, constants below). The within- and
between-artist cosine distributions of the real and the synthetic vectors are
printed first. Queries are held-out works of the same artists. Each index
type prints one JSON line: type, vectors, build_s, rss_mb (process resident
memory after the build), index_mb, raw_mb, p50_ms/p99_ms (one query at a
time), batch_ms (per query, batches of 100), recall_at_10 (against exact).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np

from mimicry.store import ann, ann_faiss
from mimicry.store.snapshot import exact_search

DIM = 1568
PCS = 256
# Fallback spectrum (fitted on 4,558 WikiArt works by 483 artists with the default
# descriptor): component k's variance is scale * (k + 1) ** -decay, between and within artists.
FALLBACK = {"between_scale": 0.0124, "between_decay": 1.13, "within_scale": 0.0148, "within_decay": 0.83,
            "residual_var": 1.1e-5, "mean_norm": 0.85}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Shape:
    """Where synthetic vectors come from: a mean, a basis, per-component spreads."""

    def __init__(self, mean, basis, between_sd, within_sd, residual_sd):
        self.mean, self.basis = mean.astype(np.float32), basis.astype(np.float32)
        self.between_sd, self.within_sd, self.residual_sd = between_sd, within_sd, residual_sd

    @staticmethod
    def fit(vectors: np.ndarray, artists: np.ndarray) -> "Shape":
        mean = vectors.mean(0)
        centred = vectors - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:PCS].T  # DIM x PCS
        coords = centred @ basis
        names, own = np.unique(artists, return_inverse=True)
        counts = np.bincount(own)
        means = np.stack([coords[own == j].mean(0) for j in range(len(names))])
        within = np.stack([coords[own == j].var(0) for j in range(len(names)) if counts[j] > 1]).mean(0)
        between = means[counts > 1].var(0)
        residual = (np.square(centred).sum(1).mean() - np.square(coords).sum(1).mean()) / (DIM - PCS)
        return Shape(mean, basis, np.sqrt(between), np.sqrt(within), float(np.sqrt(max(residual, 0))))

    @staticmethod
    def fallback(seed: int = 0) -> "Shape":
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.normal(size=(DIM, PCS + 1)))
        mean = basis[:, PCS] * FALLBACK["mean_norm"]
        k = np.arange(1, PCS + 1)
        return Shape(mean, basis[:, :PCS], np.sqrt(FALLBACK["between_scale"] * k ** -FALLBACK["between_decay"]),
                     np.sqrt(FALLBACK["within_scale"] * k ** -FALLBACK["within_decay"]),
                     float(np.sqrt(FALLBACK["residual_var"])))

    def draw(self, centres: np.ndarray, rng: np.random.Generator, spread: np.ndarray | float = 1.0) -> np.ndarray:
        """One unit vector per row of ``centres`` (artist coordinates); ``spread``
        scales each row's within-artist spread (artists differ in how tight they are)."""
        coords = centres + rng.standard_normal(centres.shape, dtype=np.float32) * self.within_sd \
            * np.reshape(spread, (-1, 1)).astype(np.float32)
        x = self.mean + coords @ self.basis.T
        x += rng.standard_normal(x.shape, dtype=np.float32) * self.residual_sd
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def registry(shape: Shape, n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, artist per vector, held-out queries of the same artists)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < 0.8 * n:
        sizes.append(int(rng.integers(20, 201)))
    sizes[-1] -= sum(sizes) - int(0.8 * n)
    n_art = len(sizes)
    centres = (rng.standard_normal((n_art, PCS)) * shape.between_sd).astype(np.float32)
    tightness = rng.lognormal(0.0, 0.35, n_art).astype(np.float32)  # matches the real spread of within-artist cosines
    owner = np.repeat(np.arange(n_art), sizes)
    loose = n - len(owner)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, len(owner), 50_000):
        e = min(s + 50_000, len(owner))
        out[s:e] = shape.draw(centres[owner[s:e]], rng, tightness[owner[s:e]])
    for s in range(len(owner), n, 50_000):  # unclustered: each its own centre
        m = min(50_000, n - s)
        out[s:s + m] = shape.draw((rng.standard_normal((m, PCS)) * shape.between_sd).astype(np.float32), rng)
    labels = np.r_[owner, -1 - np.arange(loose)]
    q_owner = owner[rng.integers(0, len(owner), n_queries)]
    return out, labels, shape.draw(centres[q_owner], rng, tightness[q_owner])


def cosine_stats(vectors: np.ndarray, labels: np.ndarray, seed: int = 0, pairs: int = 20000) -> dict:
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(vectors), (2, pairs * 4))
    between = (labels[i] != labels[j])
    cos_b = np.einsum("nd,nd->n", vectors[i[between][:pairs]], vectors[j[between][:pairs]])
    groups = [np.flatnonzero(labels == a) for a in np.unique(labels[labels >= 0] if (labels >= 0).any() else labels)]
    groups = [g for g in groups if len(g) > 1]
    picks = [rng.choice(g, 2, replace=False) for g in (groups[k] for k in rng.integers(0, len(groups), pairs))]
    cos_w = np.array([vectors[a] @ vectors[b] for a, b in picks])

    def q(x):
        return {"mean": round(float(x.mean()), 4), "p10": round(float(np.percentile(x, 10)), 4),
                "p50": round(float(np.percentile(x, 50)), 4), "p90": round(float(np.percentile(x, 90)), 4)}

    return {"within_artist": q(cos_w), "between_artist": q(cos_b)}


def measure(kind: str, x: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    if kind == "flat":
        view, index_mb, setting = None, 0.0, None

        def search(q: np.ndarray) -> np.ndarray:
            return exact_search(x, q, 10)[1]
    else:
        ids = np.arange(len(x), dtype=np.int64)
        folder = Path(f"/tmp/mimicry-bench-{kind}-{len(x)}")
        folder.mkdir(exist_ok=True)
        info = ann_faiss.create(folder, x, ids, kind, 1)
        view = ann_faiss.load(folder, info, ids)
        index_mb, setting = info.memory_bytes / 2**20, info.search

        def search(q: np.ndarray) -> np.ndarray:
            return view.search(x, q, 10)[1]
    build_s = time.perf_counter() - t0
    after = rss_mb()
    single = []
    for i in range(min(200, len(queries))):
        t = time.perf_counter()
        search(queries[i:i + 1])
        single.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    got = np.concatenate([search(queries[s:s + 100]) for s in range(0, len(queries), 100)])
    batch_ms = (time.perf_counter() - t) * 1000 / len(queries)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())]))
    return {"type": kind, "vectors": len(x), "build_s": round(build_s, 2), "rss_mb": round(after, 1),
            "build_rss_delta_mb": round(after - before, 1), "index_mb": round(index_mb, 1),
            "raw_mb": round(x.nbytes / 2**20, 1),
            "memory_vs_raw": round((x.nbytes / 2**20 + index_mb) / (x.nbytes / 2**20), 3),
            "p50_ms": round(float(np.median(single)), 3), "p99_ms": round(float(np.percentile(single, 99)), 3),
            "batch_ms": round(batch_ms, 3), "recall_at_10": round(recall, 4), "search": setting}


def scan_and_calibration(shape: Shape, n: int, seed: int) -> None:
    """A calibrated scan against an ``n``-work registry, dense against neighbour scoring, and its calibration."""
    from mimicry.flagging import with_calibration
    from mimicry.calibration import calibrate
    from mimicry.scoring import score
    from mimicry.store.snapshot import Snapshot
    from mimicry.scanning import Calibrated, judge_aligned

    x, labels, queries = registry(shape, n, 100, seed)
    clustered = labels[labels >= 0]
    rng = np.random.default_rng(seed)
    # Unclustered works belong to artists too (ones whose portfolio wanders).
    artists = np.where(labels >= 0, labels, rng.choice(clustered.max() + 1, len(labels)))
    names = [f"artist-{a}" for a in artists]
    bg, _, _ = registry(shape, 3000, 1, seed + 1)
    gc.collect()
    m0, t0 = rss_mb(), time.perf_counter()
    cal = calibrate(x, names, bg, 0.01)
    print(json.dumps({"calibration": {"works": n, "artists": len(cal.artists), "background": len(bg),
                                      "seconds": round(time.perf_counter() - t0, 1),
                                      "rss_growth_mb": round(rss_mb() - m0, 1),
                                      "quadratic_matrix_gb_before": round(n * n * 4 / 2**30, 1)}}))
    snap = with_calibration(Snapshot.from_labelled(x, names, background=bg), cal)
    folder = Path(f"/tmp/mimicry-bench-scan-{n}")
    folder.mkdir(exist_ok=True)
    info = ann_faiss.create(folder, x, snap.work_ids, "ivf", 1)
    from dataclasses import replace

    with_ann = replace(snap, ann=ann_faiss.load(folder, info, snap.work_ids))
    aligned = Calibrated.align(snap)
    for label, s, need in (("dense exact (before)", snap, None), ("neighbours, exact", snap, 3),
                           ("neighbours, ivf", with_ann, 3)):
        gc.collect()
        m0 = rss_mb()
        times = []
        for i in range(len(queries)):
            t = time.perf_counter()
            raw = score(s, queries[i:i + 1], need=need).raw
            judge_aligned(s, aligned, raw, queries[i:i + 1])
            times.append((time.perf_counter() - t) * 1000)
        print(json.dumps({"scan": label, "works": n, "p50_ms_per_image": round(float(np.median(times)), 2),
                          "p99_ms": round(float(np.percentile(times, 99)), 2),
                          "rss_growth_mb": round(rss_mb() - m0, 1)}))


def registry_folder(shape: Shape, n: int, seed: int, folder: Path, index_type: str):
    """A fresh index folder holding ``n`` synthetic works (committed 20,000 at
    a time by one writer), and ``works(rows, tag)``, which makes more of them."""
    import shutil

    from mimicry.store import Pin, Store
    from mimicry.store.writer import NewWork

    x, labels, _ = registry(shape, n, 1, seed)
    shutil.rmtree(folder, ignore_errors=True)
    store = Store.create(folder, Pin("bench", "bench", "0" * 64, x.shape[1], {"version": 1},
                                     index_type=index_type))

    def works(rows: range, tag: str) -> list:
        return [(NewWork(f"artist-{max(int(labels[i % len(labels)]), 0)}", f"/{tag}/{i}.png",
                         f"{tag}{i:063x}"[-64:], 1, 1), x[i % len(x)]) for i in rows]

    with store.writer() as w:
        for start in range(0, n, 20_000):
            w.commit(works(range(start, min(n, start + 20_000)), "a"), [])
    return store, works


def write_during_build(shape: Shape, n: int, seed: int) -> None:
    """A registry of ``n`` works in a real index folder: a writer removes a
    quarter of them (an HNSW rebuild falls due), and one second into the build
    another writer commits 10 new works. Prints how long each writer took and
    how long the build ran (a write used to wait for all of it: builds ran
    under the write lock)."""
    import shutil
    import threading

    from mimicry.store import Store

    folder = Path(f"/tmp/mimicry-bench-build-{n}")
    store, works = registry_folder(shape, n, seed, folder, "hnsw")
    ids = store.snapshot().work_ids
    store.ann_in_background = True
    def in_use() -> str | None:  # the readable copy of what the catalogue names
        info = ann.read_info(folder)
        return info.file if info is not None else None

    built = in_use()
    t0 = time.perf_counter()
    with store.writer() as w:
        w.commit([], ids[: n // 4].tolist())
    first = time.perf_counter() - t0
    time.sleep(1.0)
    t1 = time.perf_counter()
    with Store.open(folder).writer() as w:
        w.commit(works(range(n, n + 10), "b"), [])
    second = time.perf_counter() - t1
    while in_use() == built:
        time.sleep(0.2)
    build = time.perf_counter() - t0
    print(json.dumps({"write_during_build": {"works": n, "index": "hnsw", "removing_writer_s": round(first, 2),
                                             "concurrent_10_work_commit_s": round(second, 2),
                                             "build_s": round(build, 1),
                                             "threads_alive": threading.active_count()}}))
    shutil.rmtree(folder, ignore_errors=True)


def commit_costs(shape: Shape, n: int, seed: int) -> None:
    """A registry of ``n`` works in a real index folder: the time of 30
    successive 10-work commits by one process (p50, p90, max), of a 1-work
    removal, of a reader's snapshot right after a commit in the same process,
    and of reading the whole state from disk (what every commit did twice
    before writers advanced their snapshot from the commit)."""
    import shutil

    from mimicry.store import Store

    folder = Path(f"/tmp/mimicry-bench-commit-{n}")
    store, works = registry_folder(shape, n, seed, folder, "flat")
    t = time.perf_counter()
    Store.open(folder).snapshot()
    full = time.perf_counter() - t
    times = []
    for c in range(30):
        t = time.perf_counter()
        with store.writer() as w:
            w.commit(works(range(n + 10 * c, n + 10 * c + 10), "b"), [])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    store.snapshot()
    reader = time.perf_counter() - t
    t = time.perf_counter()
    with store.writer() as w:
        w.commit([], [int(store.snapshot().work_ids[7])])
    removal = time.perf_counter() - t
    print(json.dumps({"commits": {"works": n, "full_read_s": round(full, 2),
                                  "commit_10_p50_s": round(float(np.median(times)), 3),
                                  "commit_10_p90_s": round(float(np.percentile(times, 90)), 3),
                                  "commit_10_max_s": round(max(times), 3), "first_commit_s": round(times[0], 3),
                                  "removal_1_s": round(removal, 3), "reader_snapshot_after_s": round(reader, 4),
                                  "segments": len(list((folder / "segments").glob("*.ids.npy")))}}))
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--types", nargs="+", default=["flat", "ivf", "hnsw"])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--reference", type=Path, default=Path("../shared/eval/reference/images"))
    ap.add_argument("--scan", type=int, default=0, help="Also time a calibrated scan and calibration at this many works.")
    ap.add_argument("--commits", type=int, default=0,
                    help="Also time small commits against a registry of this many works.")
    ap.add_argument("--write-during-build", type=int, default=0,
                    help="Also time a write while an HNSW index of this many works is rebuilt.")
    args = ap.parse_args()
    if args.reference.is_dir():
        from mimicry.backbones import load_embedder
        from mimicry.images import expand_inputs
        from mimicry.settings import get_settings
        from mimicry.vector_cache import embed_cached

        paths = [Path(p) for p in expand_inputs([args.reference])]
        got = embed_cached(load_embedder("default", "cpu"), paths, get_settings().home / "cache", 32)
        real = got.vectors
        labels = np.unique([p.parent.name for p in got.keys], return_inverse=True)[1]
        shape = Shape.fit(real, labels)
        print(json.dumps({"real": {"works": len(real), "artists": int(labels.max() + 1), **cosine_stats(real, labels)}}))
    else:
        shape = Shape.fallback()
        print(json.dumps({"real": "no --reference folder: fallback spectrum", "constants": FALLBACK}))
    sx, sl, _ = registry(shape, 20_000, 1, 123)
    print(json.dumps({"synthetic": {"works": len(sx), **cosine_stats(sx, sl)}}))
    del sx, sl
    for n in args.vectors:
        x, _, queries = registry(shape, n, args.queries, seed=n)
        _, truth = exact_search(x, queries, 10)
        for kind in args.types:
            print(json.dumps(measure(kind, x, queries, truth)), flush=True)
        del x
        gc.collect()
    if args.scan:
        scan_and_calibration(shape, args.scan, seed=7)
    if args.commits:
        commit_costs(shape, args.commits, seed=13)
    if args.write_during_build:
        write_during_build(shape, args.write_during_build, seed=11)


if __name__ == "__main__":
    main()
