"""Decode-and-resize paths side by side on the same files: Pillow with JPEG
draft mode (the recipe's decoder, :func:`mimicry.images.decode`), simplejpeg
(libjpeg-turbo) at the DCT scale Pillow's draft picks, simplejpeg at
libjpeg-turbo's finer k/8 scale, pyvips (shrink-on-load) and
torchvision.io.decode_jpeg (full size).

Run: .venv/bin/python scripts/bench_decode.py [--images 48] [--size 1024] [--repeats 5] [--folder DIR]

Each path reads the file's bytes once and hashes them (as indexing does),
decodes, and makes the model's 224x224 input with the recipe's own resize.
Prints, per path, the median milliseconds per image on one thread, the ratio
to Pillow, and the worst cosine distance of the resulting default-backbone
vectors from Pillow's (a decoder enters the recipe only within 1e-3). Paths
whose package is not installed are reported as missing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from mimicry.backbones import load_embedder
from mimicry.images import decode
from mimicry.synthetic import STYLES, paint, scene

torch.set_num_threads(1)


def make_jpegs(root: Path, n: int, size: int) -> list[Path]:
    out = []
    for i in range(n):
        img = paint(scene(i), STYLES[i % len(STYLES)], i).resize((size, int(size * 0.75)), Image.BICUBIC)
        p = root / f"{i:03d}.jpg"
        img.save(p, quality=90)
        out.append(p)
    return out


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    return data


def pillow(path: Path, draft: int) -> Image.Image:
    return decode(path, draft).image  # reads and hashes once itself


def simplejpeg_pillow_scale(path: Path, draft: int) -> Image.Image:
    """libjpeg-turbo at the power-of-two scale Pillow's draft picks: the same pixels."""
    import simplejpeg

    data = _read(path)
    w, h = Image.open(io.BytesIO(data)).size
    scale = min(w // draft, h // draft)
    scale = next((s for s in (8, 4, 2) if scale >= s), 1)
    return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // scale),
                                                  min_height=-(-h // scale)))


def simplejpeg_k8(path: Path, draft: int) -> Image.Image:
    import simplejpeg

    data = _read(path)
    return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=draft, min_width=draft))


def pyvips_path(path: Path, draft: int) -> Image.Image:
    import pyvips

    data = _read(path)
    w, h = Image.open(io.BytesIO(data)).size
    shrink = 1
    while shrink < 8 and min(w, h) // (shrink * 2) >= draft:
        shrink *= 2
    img = pyvips.Image.new_from_buffer(data, "", shrink=shrink)
    return Image.fromarray(np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8,
                                      shape=(img.height, img.width, img.bands)))


def torchvision_path(path: Path, draft: int) -> Image.Image:
    from torchvision.io import decode_jpeg

    t = decode_jpeg(torch.frombuffer(bytearray(_read(path)), dtype=torch.uint8))
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def _usable(fn: Callable[[Path, int], Image.Image], path: Path, draft: int) -> bool:
    try:
        return fn(path, draft).mode == "RGB"
    except Exception:  # noqa: BLE001 - any refusal leaves the file out of the comparison
        return False


PATHS: dict[str, Callable[[Path, int], Image.Image]] = {
    "pillow-draft": pillow, "simplejpeg": simplejpeg_pillow_scale, "simplejpeg-k/8": simplejpeg_k8,
    "pyvips": pyvips_path, "torchvision": torchvision_path,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folder", type=Path, default=None,
                    help="time real JPEGs: a seeded sample of --images files found under this folder")
    args = ap.parse_args()
    emb = load_embedder("default", "cpu")
    draft = emb.recipe.draft_size
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder is not None:
            found = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
            files = random.Random(0).sample(found, min(args.images, len(found)))
            print(f"{len(files)} JPEGs sampled from {args.folder}")
        else:
            files = make_jpegs(Path(tmp), args.images, args.size)
            print(f"{len(files)} synthetic JPEGs of {args.size}x{int(args.size * 0.75)}")
        paths = {}
        for name, fn in PATHS.items():
            try:
                fn(files[0], draft)
                paths[name] = fn
            except ImportError as exc:
                print(f"{name:<15} missing ({exc.name})")
        # Only files every path reads as 3-channel images (real folders hold
        # CMYK and greyscale JPEGs some decoders refuse or keep grey).
        usable = [f for f in files if all(_usable(fn, f, draft) for fn in paths.values())]
        if len(usable) < len(files):
            print(f"{len(files) - len(usable)} files left out: a path could not read them as RGB")
        files = usable
        vectors = {name: emb.embed_tensors(torch.stack([emb.preprocess(fn(p, draft)) for p in files]))
                   for name, fn in paths.items()}
        # Interleaved: every repeat times each path once, so drift on a noisy
        # host hits them alike; ratios are medians of per-repeat ratios.
        runs: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                t = time.perf_counter()
                for p in files:
                    emb.preprocess(fn(p, draft))
                runs[name].append((time.perf_counter() - t) * 1000 / len(files))
        for name, ms in runs.items():
            ratio = statistics.median(b / m for b, m in zip(runs["pillow-draft"], ms))
            worst = float(1 - np.min(np.sum(vectors[name] * vectors["pillow-draft"], axis=1)))
            print(f"{name:<15} {statistics.median(ms):7.2f} ms/image  {ratio:5.2f}x Pillow's speed  "
                  f"worst cosine distance to Pillow's vectors {worst:.2e}")


if __name__ == "__main__":
    main()
