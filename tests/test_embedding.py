"""The embedding loop: the model starts after one forward's worth of decodes,
and how images are grouped into forward passes never moves a vector."""

from __future__ import annotations

import numpy as np
import torch

from helpers import noise_image
from mimicry.embedding import embed_sources


class Recording:
    """Wraps an embedder; records the size of each forward pass."""

    def __init__(self, base, forward_batch: int) -> None:
        self.base = base
        self.backbone_id, self.weights_sha256, self.dim, self.device, self.recipe = (
            base.backbone_id, base.weights_sha256, base.dim, base.device, base.recipe)
        self.forward_batch = forward_batch
        self.calls: list[int] = []

    def preprocess(self, image):
        return self.base.preprocess(image)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        self.calls.append(len(batch))
        return self.base.embed_tensors(batch)


def test_model_starts_before_a_whole_batch_is_decoded(tmp_path, default_embedder):
    paths = [noise_image(tmp_path / f"{i:02d}.png", seed=i) for i in range(21)]
    bad = tmp_path / "10-bad.png"
    bad.write_bytes(b"not an image")
    paths.insert(10, bad)
    rec = Recording(default_embedder, forward_batch=4)
    batches = list(embed_sources(rec, paths, batch_size=16, workers=1))
    # Passes of 4 as images arrive; the batch's remainder in one pass at its end.
    assert rec.calls == [4, 4, 4, 4, 4, 1]
    assert [len(b.sources) for b in batches] == [16, 5]
    assert [e.path for b in batches for e in b.errors] == [str(bad)]

    whole = Recording(default_embedder, forward_batch=16)
    ref = np.concatenate([b.vectors for b in embed_sources(whole, paths, batch_size=16, workers=1)])
    got = np.concatenate([b.vectors for b in batches])
    assert whole.calls == [16, 5]
    assert got.shape == (21, default_embedder.dim)
    assert np.allclose(got, ref, atol=1e-5)
