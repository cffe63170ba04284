"""Safe image decoding: every image that enters mimicry passes through here.

Promises:
- ``load_image`` returns an RGB ``PIL.Image`` with EXIF orientation applied, or
  raises :class:`ImageError` naming the file and the reason. It never returns a
  half-decoded image.
- Pillow's decompression-bomb guard stays on; files above ``MAX_FILE_BYTES`` are
  refused before they are read.
- Palette, alpha, CMYK, 16-bit and greyscale images become 8-bit RGB (alpha is
  composited on white); animated images give their first frame.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

#: Files larger than this are refused unread (bytes).
MAX_FILE_BYTES = int(os.environ.get("MIMICRY_MAX_FILE_BYTES", 64 * 1024 * 1024))

#: File suffixes treated as images when walking a folder.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)


class ImageError(Exception):
    """An image could not be used. ``str()`` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        span = hi - lo or 1.0
        img = Image.fromarray(((arr - lo) / span * 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to an RGB image, or raise :class:`ImageError`.

    ``draft_size`` lets JPEG decoding skip detail below that many pixels on the
    short side (a large speed-up for big photos); the result is then at least that
    large on its short side where the source was.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image")
    if size == 0:
        raise ImageError(path, "file is empty")
    if size > MAX_FILE_BYTES:
        raise ImageError(
            path, f"file is {size} bytes, above the {MAX_FILE_BYTES}-byte limit"
        )
    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning becomes an error: refuse, don't decode.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if getattr(img, "is_animated", False):
                    img.seek(0)
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(img)
                rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"refused as a decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"corrupt or truncated image ({exc})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(path, "image has no pixels")
    return rgb


def iter_image_files(root: str | Path) -> Iterator[Path]:
    """Every file under ``root`` with an image suffix, sorted, hidden files skipped."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (in order, no repeats)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        p = Path(item)
        found = list(iter_image_files(p)) if p.is_dir() else [p]
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out
