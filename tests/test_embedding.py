"""The embedding loop: the model starts after one forward's worth of decodes,
how images are grouped into forward passes never moves a vector, and an engine
accounts for every input exactly once, in input order, failures keyed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import noise_image
from mimicry.engines import Embedded
from mimicry.engines import make_engine
from mimicry.engines.local import LocalEngine
from mimicry.errors import ImageError, InputError
from mimicry.images import ImageBytes


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


def test_model_starts_before_a_whole_batch_is_decoded(tmp_path, fresh_embedder):
    # Batches of 4 images in passes of 2: the same shape as batches of 16 in
    # passes of 4 (full passes, then a batch whose remainder is one short pass),
    # a third of the forward passes.
    paths = [noise_image(tmp_path / f"{i:02d}.png", seed=i) for i in range(7)]
    bad = tmp_path / "03-bad.png"
    bad.write_bytes(b"not an image")
    paths.insert(3, bad)  # inside the first batch, in the middle of a pass
    rec = Recording(fresh_embedder, forward_batch=2)
    batches = list(LocalEngine(rec, workers=1).embed(paths, batch_size=4))
    # Passes of 2 as images arrive; the batch's remainder in one pass at its end.
    assert rec.calls == [2, 2, 2, 1]
    assert [len(b.keys) for b in batches] == [4, 3]
    assert [(k, e.path) for b in batches for k, e in b.failed] == [(bad, str(bad))]

    whole = Recording(fresh_embedder, forward_batch=4)
    ref = np.concatenate([b.vectors for b in LocalEngine(whole, workers=1).embed(paths, batch_size=4)])
    got = np.concatenate([b.vectors for b in batches])
    assert whole.calls == [4, 3]
    assert got.shape == (7, fresh_embedder.dim)
    assert np.allclose(got, ref, atol=1e-5)


def test_an_engine_yields_every_input_once_in_order_failures_keyed(tmp_path, fresh_embedder):
    upload = ImageBytes("up.png", noise_image(tmp_path / "up.png", seed=99).read_bytes())
    sources = [noise_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    sources[2:2] = [tmp_path / "bad.png", upload]
    sources[6:6] = [upload, tmp_path / "missing.png"]  # the same upload twice: two inputs
    bad = {2: str(tmp_path / "bad.png"), 7: str(tmp_path / "missing.png")}
    seen: list[tuple[str, int, int]] = []
    engine = make_engine("local", lambda: fresh_embedder, lambda: {})
    stretches = list(engine.embed(sources, keys=range(len(sources)), batch_size=3,
                                  progress=lambda *a: seen.append(a), stage="testing"))

    order = [sorted(s.keys + [k for k, _ in s.failed]) for s in stretches]
    assert [k for o in order for k in o] == list(range(len(sources)))  # each once, stretches in order
    assert all(s.keys == sorted(s.keys) and len(s.vectors) == len(s.sha256) == len(s.keys) for s in stretches)
    assert all(isinstance(e, ImageError) for s in stretches for _, e in s.failed)
    assert {k: e.path for s in stretches for k, e in s.failed} == bad
    assert seen == [("testing", sum(len(s) for s in stretches[:i + 1]), len(sources))
                    for i in range(len(stretches))]

    whole = Embedded.gather(stretches, fresh_embedder.dim)
    assert [s.path for s in whole.skipped()] == list(bad.values())
    np.testing.assert_array_equal(whole.vectors[whole.keys.index(3)], whole.vectors[whole.keys.index(6)])
    plain = Embedded.gather(LocalEngine(fresh_embedder).embed(sources, batch_size=4), fresh_embedder.dim)
    assert plain.keys == [s for i, s in enumerate(sources) if i not in bad]  # default key: the source
    assert np.allclose(plain.vectors, whole.vectors, atol=1e-5) and plain.sha256 == whole.sha256


def test_an_empty_stream_gathers_to_no_rows_and_an_unknown_engine_is_refused(fresh_embedder):
    empty = Embedded.gather(LocalEngine(fresh_embedder).embed([]), 7)
    assert (empty.keys, empty.failed, empty.vectors.shape) == ([], [], (0, 7))
    with pytest.raises(InputError, match="--engine 'spark': use one of local, ray"):
        make_engine("spark", lambda: fresh_embedder, lambda: {})
