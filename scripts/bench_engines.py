"""Embedding engines side by side: the local engine against Ray (a local Ray
on this machine), on the same JPEGs, in one run.

Run: .venv/bin/python scripts/bench_engines.py [--images 96] [--size 1024] [--repeats 3]

Prints images/s of ``add_folder`` with each engine (medians over repeats,
Ray's start-up excluded and printed apart), the ratio ray/local, and the
images each Ray embedding worker did per second of the run: the per-worker
rate is what adding machines multiplies.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_embed import make_images  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.backbones import load_embedder  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from mimicry.engines import ray as ray_engines

    emb = load_embedder("default", "cpu")
    t = time.perf_counter()
    ray = ray_engines.start()
    print(f"ray start-up {time.perf_counter() - t:.1f} s; cluster {ray.cluster_resources()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp) / "p", args.images, args.size)
        rates: dict[str, list[float]] = {"local": [], "ray": []}
        workers: dict[int, int] = {}
        for r in range(args.repeats):
            for engine in ("local", "ray"):
                folder = Path(tmp) / f"ix-{engine}-{r}"
                with StyleIndex.create(folder, embedder=emb) as ix:
                    t = time.perf_counter()
                    if engine == "ray":
                        from dataclasses import asdict

                        pin = asdict(ix.store.read_pin())
                        stats: dict[int, int] = {}
                        paths = sorted(root.rglob("*.jpg"))
                        for _ in ray_engines.RayEngine(pin, threads=get_settings().ray_threads,
                                                        stats=stats).embed(paths):
                            pass
                        workers = stats
                    else:
                        ix.add_folder(root)
                    rates[engine].append(args.images / (time.perf_counter() - t))
        local, remote = statistics.median(rates["local"]), statistics.median(rates["ray"])
        print(f"local  {local:6.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in rates['local'])})")
        print(f"ray    {remote:6.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in rates['ray'])}; "
              f"embedding only, no commit)")
        print(f"ray/local {remote / local:.2f}")
        run_s = args.images / rates["ray"][-1]
        for pid, n in sorted(workers.items()):
            print(f"  ray worker {pid}: {n} images, {n / run_s:.1f} images/s over the run")


if __name__ == "__main__":
    main()
