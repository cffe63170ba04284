"""Throughput of `mimicry index` against the bare backbone and a naive loop.

Run: .venv/bin/python scripts/bench_embed.py [--images 96] [--repeats 3]

On the same images, in one run, it measures images/s of:
  bare   the model's forward pass alone on pre-decoded, pre-processed tensors
  index  StyleIndex.add_folder (hash, decode, preprocess, embed, commit), cold index
  naive  one image at a time: decode, preprocess, forward, no threads, no batching
and prints the medians and the ratios index/bare and index/naive.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    emb = load_embedder("default", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp) / "p", args.images, args.size)
        paths = sorted(root.rglob("*.jpg"))
        tensors = [emb.preprocess(load_image(p)) for p in paths]
        emb.embed_tensors(torch.stack(tensors[:4]))  # warm-up
        bare, index, naive = [], [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            for s in range(0, len(tensors), args.batch_size):
                emb.embed_tensors(torch.stack(tensors[s : s + args.batch_size]))
            bare.append(len(paths) / (time.perf_counter() - t))

            ix = StyleIndex.create(Path(tmp) / f"ix{r}", embedder=emb)
            t = time.perf_counter()
            rep = ix.add_folder(root, batch_size=args.batch_size)
            index.append(len(paths) / (time.perf_counter() - t))
            assert rep.embedded == len(paths), rep
            ix.close()

            t = time.perf_counter()
            for p in paths:
                emb.embed_tensors(emb.preprocess(load_image(p))[None])
            naive.append(len(paths) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in (("bare", bare), ("index", index), ("naive", naive))}
    print(f"{len(paths)} JPEGs of {args.size}x{args.size}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {args.repeats} repeats (median images/s)")
    for k, v in med.items():
        print(f"  {k:<6} {v:7.1f} img/s   runs: {', '.join(f'{x:.1f}' for x in (bare if k=='bare' else index if k=='index' else naive))}")
    print(f"  index / bare  = {med['index'] / med['bare']:.2f}   (target >= 0.85)")
    print(f"  index / naive = {med['index'] / med['naive']:.2f}   (target >= 2)")


if __name__ == "__main__":
    main()
