from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimicry.synthetic import STYLES, paint, scene


def write_portfolio(root: Path, artists: int = 3, works: int = 3, seed: int = 0) -> Path:
    """root/<artist>/work-i.png painted in that artist's procedural style."""
    for a, style in enumerate(STYLES[:artists]):
        d = root / style.name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(works):
            s = seed * 1000 + a * 100 + i
            paint(scene(s), style, s).save(d / f"work-{i}.png")
    return root


@pytest.fixture(scope="session")
def default_embedder():
    from mimicry.backbones import load_embedder

    return load_embedder("default", "cpu")


@pytest.fixture
def portfolio(tmp_path: Path) -> Path:
    return write_portfolio(tmp_path / "portfolios")


def noise_image(path: Path, seed: int = 0, size=(64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path
