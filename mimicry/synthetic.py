"""Procedural artists, imitations and unrelated images, made from nothing.

Used by ``mimicry demo`` and the tests, so both run with no data and no network.
A *scene* (what is shown: a few shapes) is kept apart from a *style* (how it is
painted: palette, mark-making, paper). A genuine work is an artist's style on a
scene of their own; an imitation is the same style on somebody else's scene;
an unrelated image is a photo-like rendering that no artist uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256


@dataclass(frozen=True)
class Style:
    """How an artist paints: ``marks`` is one of dots, hatch, flat, wash."""

    name: str
    palette: tuple[tuple[int, int, int], ...]
    paper: tuple[int, int, int]
    marks: str


STYLES: tuple[Style, ...] = (
    Style("dotwork-dora", ((214, 84, 36), (242, 180, 52), (120, 40, 90), (250, 220, 120)), (250, 244, 228), "dots"),
    Style("inkhatch-ivan", ((20, 40, 110), (40, 70, 150), (10, 20, 60)), (238, 236, 226), "hatch"),
    Style("flatpop-fiona", ((230, 30, 60), (20, 160, 220), (250, 210, 0), (40, 180, 90)), (255, 255, 255), "flat"),
    Style("wash-wen", ((140, 180, 200), (200, 160, 190), (170, 200, 150), (230, 200, 160)), (245, 240, 232), "wash"),
)


def scene(seed: int, n_shapes: int = 6) -> list[tuple[str, tuple[int, int, int, int], int]]:
    """A random arrangement of shapes: (kind, bbox, colour slot)."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n_shapes):
        kind = str(rng.choice(["ellipse", "rectangle", "polygon"]))
        w, h = rng.integers(50, 150, size=2)
        x, y = rng.integers(0, SIZE - 40, size=2)
        shapes.append((kind, (int(x), int(y), int(x + w), int(y + h)), int(rng.integers(0, 8))))
    return shapes


def _mask(kind: str, box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    m = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(m)
    if kind == "ellipse":
        d.ellipse(box, fill=255)
    elif kind == "rectangle":
        d.rectangle(box, fill=255)
    else:
        x0, y0, x1, y1 = box
        pts = [(int(rng.integers(x0, x1 + 1)), int(rng.integers(y0, y1 + 1))) for _ in range(5)]
        d.polygon(pts, fill=255)
    return m


def paint(shapes: list, style: Style, seed: int) -> Image.Image:
    """Renders ``shapes`` in ``style``; ``seed`` drives the marks' randomness."""
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 6, (SIZE, SIZE, 1))
    canvas = np.clip(np.array(style.paper, float)[None, None] + grain, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(canvas, (SIZE, SIZE, 3)).copy())
    draw = ImageDraw.Draw(img)
    for kind, box, slot in shapes:
        colour = style.palette[slot % len(style.palette)]
        mask = _mask(kind, box, rng)
        if style.marks == "dots":
            ys, xs = np.nonzero(np.asarray(mask))
            if len(xs):
                for i in rng.choice(len(xs), size=min(len(xs), 260), replace=False):
                    r = int(rng.integers(2, 5))
                    jitter = np.clip(np.array(colour) + rng.integers(-30, 30, 3), 0, 255)
                    draw.ellipse((xs[i] - r, ys[i] - r, xs[i] + r, ys[i] + r), fill=tuple(int(c) for c in jitter))
        elif style.marks == "hatch":
            hatch = Image.new("L", (SIZE, SIZE), 0)
            hd = ImageDraw.Draw(hatch)
            step = int(rng.integers(5, 8))
            for off in range(-SIZE, SIZE, step):
                hd.line((off, 0, off + SIZE, SIZE), fill=255, width=1)
            layer = Image.new("RGB", (SIZE, SIZE), colour)
            img.paste(layer, (0, 0), Image.fromarray(np.minimum(np.asarray(hatch), np.asarray(mask))))
        elif style.marks == "flat":
            img.paste(Image.new("RGB", (SIZE, SIZE), colour), (0, 0), mask)
            edge = mask.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(5))
            img.paste(Image.new("RGB", (SIZE, SIZE), (0, 0, 0)), (0, 0), edge)
        else:  # wash
            soft = mask.filter(ImageFilter.GaussianBlur(6)).point(lambda v: int(v * 0.6))
            img.paste(Image.new("RGB", (SIZE, SIZE), colour), (0, 0), soft)
    return img


def photo_like(seed: int) -> Image.Image:
    """An unrelated, photo-like image: smooth sky/ground gradients, blurred
    blobs and sensor noise, in colours none of the styles use."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, SIZE)[:, None, None]
    horizon = rng.uniform(0.3, 0.7)
    sky = np.array([90, 140, 200]) * (1 - yy) + np.array([200, 220, 235]) * yy
    ground = np.array([70, 90, 50]) + rng.uniform(-20, 20, 3)
    arr = np.where(yy < horizon, sky, ground * (0.6 + 0.4 * yy))
    arr = np.broadcast_to(arr, (SIZE, SIZE, 3)).astype(float).copy()
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.integers(0, SIZE, 2)
        r = int(rng.integers(10, 50))
        c = tuple(int(v) for v in rng.integers(40, 120, 3))
        d.ellipse((x - r, y - r, x + r, y + r), fill=c)
    img = img.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(img, float) + rng.normal(0, 8, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@dataclass
class SyntheticSet:
    """Where :func:`make_dataset` put things, and the truth about each file."""

    portfolios: Path
    imitations: Path
    unrelated: Path
    truth: dict[str, str | None]  # file name -> imitated artist (None: unrelated)


def make_dataset(root: str | Path, works_per_artist: int = 6, imitations_per_artist: int = 3,
                 unrelated: int = 6, seed: int = 0) -> SyntheticSet:
    """Writes portfolios/<artist>/*.png, imitations/*.png and unrelated/*.png under ``root``."""
    root = Path(root)
    out = SyntheticSet(root / "portfolios", root / "imitations", root / "unrelated", {})
    for folder in (out.portfolios, out.imitations, out.unrelated):
        folder.mkdir(parents=True, exist_ok=True)
    for a, style in enumerate(STYLES):
        adir = out.portfolios / style.name
        adir.mkdir(exist_ok=True)
        for i in range(works_per_artist):
            s = seed * 10_000 + a * 100 + i
            paint(scene(s), style, s).save(adir / f"work-{i:02d}.png", compress_level=1)
        for i in range(imitations_per_artist):
            s = seed * 10_000 + 5_000 + a * 100 + i  # a scene the artist never painted
            name = f"imitation-of-{style.name}-{i}.png"
            paint(scene(s), style, s + 1).save(out.imitations / name, compress_level=1)
            out.truth[name] = style.name
    for i in range(unrelated):
        name = f"photo-{i:02d}.png"
        photo_like(seed * 10_000 + 9_000 + i).save(out.unrelated / name, compress_level=1)
        out.truth[name] = None
    return out
