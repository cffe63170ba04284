"""Decode-and-resize paths side by side on the same files: Pillow with JPEG
draft mode (the recipe's decoder), simplejpeg (libjpeg-turbo with DCT
scaling), pyvips (shrink-on-load) and torchvision.io.decode_jpeg (full size).

Run: .venv/bin/python scripts/bench_decode.py [--images 48] [--size 1024] [--repeats 5]

Each path reads the file's bytes once (and hashes them, as indexing does),
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
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from mimicry.backbones import load_embedder
from mimicry.images import load_image
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


def pillow(data: bytes, path: Path, draft: int) -> Image.Image:
    return load_image(path, draft_size=draft)


def simplejpeg_path(data: bytes, path: Path, draft: int) -> Image.Image:
    import simplejpeg

    return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=draft, min_width=draft))


def pyvips_path(data: bytes, path: Path, draft: int) -> Image.Image:
    import pyvips

    w, h = Image.open(io.BytesIO(data)).size
    shrink = 1
    while shrink < 8 and min(w, h) // (shrink * 2) >= draft:
        shrink *= 2
    img = pyvips.Image.new_from_buffer(data, "", shrink=shrink)
    return Image.fromarray(np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8,
                                      shape=(img.height, img.width, img.bands)))


def torchvision_path(data: bytes, path: Path, draft: int) -> Image.Image:
    from torchvision.io import decode_jpeg

    t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return Image.fromarray(t.permute(1, 2, 0).numpy())


PATHS: dict[str, Callable[[bytes, Path, int], Image.Image]] = {
    "pillow-draft": pillow, "simplejpeg": simplejpeg_path, "pyvips": pyvips_path,
    "torchvision": torchvision_path,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    emb = load_embedder("default", "cpu")
    draft = emb.recipe.draft_size
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp), args.images, args.size)
        results, vectors = {}, {}
        for name, fn in PATHS.items():
            try:
                fn(files[0].read_bytes(), files[0], draft)
            except ImportError as exc:
                print(f"{name:<14} missing ({exc.name})")
                continue
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                tensors = []
                for p in files:
                    data = p.read_bytes()
                    hashlib.sha256(data).hexdigest()
                    tensors.append(emb.preprocess(fn(data, p, draft)))
                runs.append((time.perf_counter() - t) * 1000 / len(files))
            results[name] = statistics.median(runs)
            vectors[name] = emb.embed_tensors(torch.stack(tensors))
        base = results["pillow-draft"]
        for name, ms in results.items():
            worst = float(1 - np.min(np.sum(vectors[name] * vectors["pillow-draft"], axis=1)))
            print(f"{name:<14} {ms:7.2f} ms/image  {base / ms:5.2f}x Pillow's speed  "
                  f"worst cosine distance to Pillow's vectors {worst:.2e}")


if __name__ == "__main__":
    main()
