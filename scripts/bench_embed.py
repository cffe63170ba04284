"""Throughput of `mimicry index` on both runtimes, against the bare model and a naive loop.

Run: .venv/bin/python scripts/bench_embed.py [--images 96] [--repeats 3]

On the same images, in one run, the runtimes alternating in each repeat, it
measures images/s of, for torch and for ONNX Runtime:
  bare   the model's forward pass alone on pre-decoded, pre-processed tensors
  index  StyleIndex.add_folder (hash, decode, preprocess, embed, commit), cold index
and for torch
  naive  one image at a time: decode, preprocess, forward, no threads, no batching
and prints the medians, index/bare and index/naive for torch, and the lines
``bare onnx / bare torch = R.RR`` and ``index onnx / index torch = R.RR``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mimicry import StyleIndex
from mimicry.backbones import load_embedder
from mimicry.images import load_image
from mimicry.synthetic import STYLES, paint, scene


def make_images(root: Path, n: int, size: int) -> Path:
    """n JPEGs of size x size px (photo-sized work for the decoder), 4 artists."""
    for i in range(n):
        style = STYLES[i % len(STYLES)]
        d = root / style.name
        d.mkdir(parents=True, exist_ok=True)
        img = paint(scene(i), style, i).resize((size, size), Image.BICUBIC)
        img.save(d / f"{i:04d}.jpg", quality=90)
    return root


def bare_rate(emb, tensors: list, batch: int) -> float:
    """Images/s of the model's forward pass alone on pre-processed tensors."""
    t = time.perf_counter()
    for s in range(0, len(tensors), batch):
        emb.embed_tensors(torch.stack(tensors[s : s + batch]))
    return len(tensors) / (time.perf_counter() - t)


def index_rate(emb, root: Path, folder: Path, n: int, batch: int) -> float:
    """Images/s of ``StyleIndex.add_folder`` into a cold index at ``folder``."""
    ix = StyleIndex.create(folder, embedder=emb)
    t = time.perf_counter()
    rep = ix.add_folder(root, batch_size=batch)
    rate = n / (time.perf_counter() - t)
    assert rep.embedded == n, rep
    ix.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    models = {rt: load_embedder("default", "cpu", rt) for rt in ("torch", "onnx")}
    runs: dict[str, list[float]] = {k: [] for k in ("bare torch", "bare onnx", "index torch", "index onnx",
                                                    "naive torch")}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp) / "p", args.images, args.size)
        paths = sorted(root.rglob("*.jpg"))
        tensors = [models["torch"].preprocess(load_image(p)) for p in paths]
        for emb in models.values():
            emb.embed_tensors(torch.stack(tensors[:4]))  # warm-up
        for r in range(args.repeats):  # the runtimes alternate within each repeat
            for rt, emb in models.items():
                runs[f"bare {rt}"].append(bare_rate(emb, tensors, args.batch_size))
            for rt, emb in models.items():
                runs[f"index {rt}"].append(index_rate(emb, root, Path(tmp) / f"ix-{rt}-{r}", len(paths),
                                                      args.batch_size))
            emb = models["torch"]
            t = time.perf_counter()
            for p in paths:
                emb.embed_tensors(emb.preprocess(load_image(p))[None])
            runs["naive torch"].append(len(paths) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{len(paths)} JPEGs of {args.size}x{args.size}, batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads, {args.repeats} repeats (median images/s); {models['torch'].runtime} and "
          f"{models['onnx'].runtime}")
    for k, v in med.items():
        print(f"  {k:<12} {v:7.1f} img/s   runs: {', '.join(f'{x:.1f}' for x in runs[k])}")
    print(f"  index / bare  = {med['index torch'] / med['bare torch']:.2f}   (torch; target >= 0.85)")
    print(f"  index / naive = {med['index torch'] / med['naive torch']:.2f}   (torch; target >= 2)")
    print(f"  index onnx / bare onnx = {med['index onnx'] / med['bare onnx']:.2f}")
    print(f"  bare onnx / bare torch = {med['bare onnx'] / med['bare torch']:.2f}   (target >= 2.5)")
    print(f"  index onnx / index torch = {med['index onnx'] / med['index torch']:.2f}   (target >= 1.8)")


if __name__ == "__main__":
    main()
