"""Perturbations that launder an image (``evaluate --perturb``), and the
vectors of perturbed images, decoded exactly as a clean scan decodes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mimicry.backbones import Embedder
from mimicry.engines.local import embed_images
from mimicry.errors import ImageError
from mimicry.images import load_image

__all__ = ["PERTURBATIONS", "embed_perturbed"]


def _jpeg40(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _half(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC).resize((w, h), Image.BICUBIC)


def _noise(img: Image.Image) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = np.clip(arr + rng.normal(0, 0.03, arr.shape), 0, 1)
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def _crop80(img: Image.Image) -> Image.Image:
    w, h = img.size
    dw, dh = round(w * 0.1), round(h * 0.1)
    return img.crop((dw, dh, w - dw, h - dh))


def _flip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


#: Name -> perturbation, in the order reports show them.
PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg40": _jpeg40, "downscale_half": _half, "noise_0.03": _noise,
    "crop80": _crop80, "hflip": _flip,
}


def embed_perturbed(embedder: Embedder, paths: list[Path],
                    fn: Callable[[Image.Image], Image.Image]) -> dict[Path, np.ndarray]:
    """Vectors of ``fn(image)`` by path (unreadable images left out), decoded
    exactly as the clean scan decodes, so the identity perturbation reproduces
    the clean vectors."""
    imgs, ok = [], []
    for p in paths:
        try:
            imgs.append(fn(load_image(p, draft_size=embedder.recipe.draft_size)))
            ok.append(p)
        except ImageError:
            continue
    return dict(zip(ok, embed_images(embedder, imgs)))
