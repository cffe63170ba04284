"""Golden vectors, as open_clip tests its models: fixed generated images through
the whole recipe (decode, preprocess, model, descriptor) must give stored vectors.

Set ``MIMICRY_UPDATE_GOLDEN=1`` to rewrite a golden file, and only together
with a new recipe version: vectors that move under an unchanged recipe would
open old indexes in another vector space. An update run writes the file and
then fails, saying it wrote it (a run that wrote what it checks proves
nothing); run again without the variable to check the new file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import golden_images
from mimicry.engines import Embedded
from mimicry.engines.local import LocalEngine
from mimicry.images import ImageBytes

GOLDEN = Path(__file__).resolve().parent / "golden"
TOLERANCE = 1e-4
UPDATE = "MIMICRY_UPDATE_GOLDEN"


def golden_sources() -> list[ImageBytes]:
    """The fixed images as uploads: PNGs, and one large JPEG (exercises the DCT draft)."""
    out = []
    for i, img in enumerate(golden_images()):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(ImageBytes(f"golden-{i}.png", buf.getvalue()))
    buf = io.BytesIO()
    golden_images()[0].resize((900, 700)).save(buf, "JPEG", quality=90)
    out.append(ImageBytes("golden-large.jpg", buf.getvalue()))
    return out


def check_golden(name: str, embedder) -> None:
    got = Embedded.gather(LocalEngine(embedder).embed(golden_sources(), batch_size=2), embedder.dim)
    vectors = got.vectors
    assert not got.failed
    path = GOLDEN / f"{name}.json"
    recipe = embedder.recipe.to_dict()
    if os.environ.get(UPDATE) == "1":
        path.write_text(json.dumps({"recipe": recipe, "vectors": np.round(vectors, 7).tolist()}) + "\n")
        pytest.fail(f"{name}: wrote {path} ({UPDATE}=1); check it in with the new recipe version, "
                    f"then run again without {UPDATE} to test against it", pytrace=False)
    stored = json.loads(path.read_text())
    assert stored["recipe"] == recipe, (
        f"{name}: the recipe changed; regenerate {path.name} with {UPDATE}=1")
    diff = float(np.abs(np.asarray(stored["vectors"]) - vectors).max())
    assert diff <= TOLERANCE, (
        f"{name}: vectors moved by {diff:.2e} under an unchanged recipe: bump the recipe version "
        f"(indexes built before must be re-indexed), then regenerate {path.name}")
