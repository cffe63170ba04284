"""Safe image decoding: every image that enters mimicry passes through here.

Images come as files (paths) or as bytes (uploads); both take the same road.

Promises:
- :func:`load_image` returns an RGB ``PIL.Image`` with EXIF orientation applied,
  or raises :class:`~mimicry.errors.ImageError` naming the file (or the upload's
  name) and the reason. It never returns a half-decoded image.
- Files above ``max_file_bytes`` are refused before they are read; images above
  ``max_pixels`` are refused from their header, before their pixels are decoded
  (:mod:`mimicry.settings`). Pillow's own decompression-bomb guard stays on too.
- A file is read once: the same bytes are hashed (:attr:`Decoded.sha256`) and decoded.
- Palette, alpha, CMYK, 16-bit and greyscale images become 8-bit RGB (alpha is
  composited on white); animated images give their first frame.
- Bytes never become a path: an upload's name is a label, nothing more.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps

from mimicry.errors import ImageError
from mimicry.settings import get_settings

#: File suffixes treated as images when walking a folder.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

__all__ = [
    "Decoded", "ImageBytes", "ImageError", "ImageSource", "IMAGE_SUFFIXES", "check_header", "decode",
    "expand_inputs", "iter_image_files", "load_image", "sha256_file", "sniff_type", "source_name",
]


@dataclass(frozen=True)
class ImageBytes:
    """An image given as bytes (an upload). ``name`` labels it in results and
    errors; it is never opened as a path."""

    name: str
    data: bytes


#: What the API accepts as one image: a path or bytes with a name.
ImageSource = Union[str, Path, ImageBytes]


@dataclass(frozen=True)
class Decoded:
    """A decoded RGB image and the sha256 of the bytes it came from."""

    image: Image.Image
    sha256: str


#: Leading bytes of the image types mimicry reads, for sniffing uploads.
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def sniff_type(data: bytes) -> str | None:
    """The image type ``data`` starts like (a MIME type), or None: from the
    bytes alone, never from a file name or a client's claim."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)


def source_name(source: ImageSource) -> str:
    """How results and errors name ``source``: its path, or an upload's name."""
    return source.name if isinstance(source, ImageBytes) else str(source)


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


def _read(source: ImageSource, max_bytes: int) -> bytes:
    """The bytes of ``source``, refusing empty and oversized ones unread."""
    if isinstance(source, ImageBytes):
        size = len(source.data)
    else:
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(path, "is a folder, not an image")
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    name = source_name(source)
    if size == 0:
        raise ImageError(name, "file is empty")
    if size > max_bytes:
        raise ImageError(name, f"file is {size} bytes, above the {max_bytes}-byte limit")
    if isinstance(source, ImageBytes):
        return source.data
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None


@contextmanager
def _opened(data: bytes, name: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image in ``data``, opened (header read, pixels not yet decoded) and
    checked against ``max_pixels``; every Pillow failure inside the block
    becomes :class:`ImageError` naming ``name`` and the reason."""
    try:
        with warnings.catch_warnings():
            # Pillow's DecompressionBombWarning becomes an error: refuse, don't decode.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(name, f"refused as a decompression bomb ({w}x{h} pixels, "
                                           f"above the {max_pixels}-pixel limit)")
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"refused as a decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(name, f"corrupt or truncated image ({exc})") from None


def decode(source: ImageSource, draft_size: int | None = None) -> Decoded:
    """Reads ``source`` once, hashes and decodes it (see :func:`load_image`)."""
    settings = get_settings()
    data = _read(source, settings.max_file_bytes)
    name = source_name(source)
    with _opened(data, name, settings.max_pixels) as img:
        if getattr(img, "is_animated", False):
            img.seek(0)
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
        rgb.load()
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(name, "image has no pixels")
    return Decoded(rgb, hashlib.sha256(data).hexdigest())


def check_header(source: ImageSource, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the image header alone, or :class:`ImageError` when it
    is unreadable or above ``max_pixels`` (default: the setting); nothing is decoded."""
    settings = get_settings()
    data = _read(source, settings.max_file_bytes)
    with _opened(data, source_name(source), settings.max_pixels if max_pixels is None else max_pixels) as img:
        return img.size


def load_image(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Decodes ``source`` (a path or :class:`ImageBytes`) to an RGB image, or
    raises :class:`~mimicry.errors.ImageError`.

    ``draft_size`` lets JPEG decoding skip detail below that many pixels on the
    short side (a large speed-up for big photos); the result is then at least that
    large on its short side where the source was.
    """
    return decode(source, draft_size).image


def reduced_jpeg(source: ImageSource, side: int, quality: int) -> bytes:
    """``source`` as a JPEG at most ``side`` pixels on its long side; a JPEG is
    decoded at the smallest scale at least ``side`` (``draft``), then every
    image is reduced by whole factors before resampling (``reducing_gap``).
    Unreadable: :class:`~mimicry.errors.ImageError`."""
    img = load_image(source, draft_size=side)
    img.thumbnail((side, side), reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def iter_image_files(root: str | Path) -> Iterator[Path]:
    """Every file under ``root`` with an image suffix, sorted, hidden files and
    folders skipped. Symlinked folders are followed; paths stay under ``root``
    as named, never resolved. Each real folder is walked once, under the name
    that owns it (:func:`_owners`): a link to a folder walked under another
    name, or already visited by this walk, is skipped, so a link cycle ends."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    owners = _owners(root)
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited or owners.get(real, dirpath) != dirpath:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name


def _owners(root: Path) -> dict[str, str]:
    """Real path -> the path (as named) that owns the folder: reached from
    ``root``, else from one of its first-level folders that are links, without
    following any further link (the first in sorted order wins). A link deeper
    down to a folder another name owns is thus not walked: ``bg/degas/x`` linked
    to ``bg/monet`` leaves Monet's works under ``bg/monet``."""
    try:
        links = sorted(os.path.join(root, e.name) for e in os.scandir(root)
                       if not e.name.startswith(".") and e.is_symlink() and e.is_dir())
    except OSError:  # not a readable folder: the walk finds nothing either
        links = []
    owners: dict[str, str] = {}
    for top in [os.fspath(root)] + links:
        for dirpath, dirnames, _ in os.walk(top):
            owners.setdefault(os.path.realpath(dirpath), dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return owners


def expand_inputs(items: Iterable[ImageSource] | ImageSource) -> list[ImageSource]:
    """Files as given, folders expanded to their images (in order, no repeats);
    :class:`ImageBytes` pass through unchanged. One path or upload on its own
    counts as a list of one (a string is never taken letter by letter)."""
    if isinstance(items, (str, Path, ImageBytes)):
        items = [items]
    out: list[ImageSource] = []
    seen: set[Path] = set()
    for item in items:
        if isinstance(item, ImageBytes):
            out.append(item)
            continue
        p = Path(item)
        found = list(iter_image_files(p)) if p.is_dir() else [p]
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out
