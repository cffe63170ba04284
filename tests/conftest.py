"""Shared fixtures. Heavy ones (the default model, the demo's calibrated index)
are built once per test session; tests that write copy them first."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import copy_portfolio, demo_truth, write_portfolio

# mimicry's own files (exported ONNX graphs) for this test session alone: the
# graph is exported once per session and every process the tests start reuses it.
os.environ["MIMICRY_HOME"] = tempfile.mkdtemp(prefix="mimicry-test-home-")
atexit.register(shutil.rmtree, os.environ["MIMICRY_HOME"], True)


class KnownVectors:
    """The default model, each distinct preprocessed image run through it once
    per session: a batch's rows whose exact pixels (the uint8 tensor the
    recipe made) the model has already embedded get that real vector back.
    A different decode, resize or crop is a different tensor and runs the model,
    so every vector is the real model's for exactly the pixels asked about; what
    this skips is only the repeat forward pass (most tests index the same
    generated portfolios and the demo's images again). Tests of the model or of
    how images are batched into it use :func:`fresh_embedder` instead."""

    def __init__(self, model) -> None:
        self.model = model
        self.backbone_id, self.weights_sha256, self.dim, self.device = (
            model.backbone_id, model.weights_sha256, model.dim, model.device)
        self.recipe, self.forward_batch, self.runtime = model.recipe, model.forward_batch, model.runtime
        self._known: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def preprocess(self, image):
        return self.model.preprocess(image)

    def embed_tensors(self, batch):
        keys = [hashlib.blake2b(t.contiguous().numpy().tobytes(), digest_size=20).digest() for t in batch]
        with self._lock:
            new = [i for i, k in enumerate(keys) if k not in self._known]
        if new:
            vecs = self.model.embed_tensors(batch[new])
            with self._lock:
                self._known.update((keys[i], v) for i, v in zip(new, vecs))
        with self._lock:
            return np.stack([self._known[k] for k in keys])


@pytest.fixture(scope="session")
def fresh_embedder():
    """The default model itself: every call runs it (tests of the model, its
    golden vectors, and of how the engines batch images into it)."""
    from mimicry.backbones import load_embedder

    return load_embedder("default", "cpu")


@pytest.fixture(scope="session")
def default_embedder(fresh_embedder):
    """The default model for tests that index and scan (see :class:`KnownVectors`)."""
    return KnownVectors(fresh_embedder)


@pytest.fixture(scope="session")
def _portfolio_template(tmp_path_factory) -> Path:
    return write_portfolio(tmp_path_factory.mktemp("template") / "portfolios")


@pytest.fixture
def portfolio(tmp_path: Path, _portfolio_template: Path) -> Path:
    """Three procedural artists with three works each, a private copy per test."""
    return Path(shutil.copytree(_portfolio_template, tmp_path / "portfolios"))


@pytest.fixture(scope="session")
def demo(tmp_path_factory, default_embedder):
    """``mimicry demo`` run once per session: (result, printed lines, its folder).
    Its index is calibrated with a background; treat it as read-only."""
    from mimicry.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(out, echo=lines.append, embedder=default_embedder)
    return result, lines, out


@pytest.fixture
def calibrated_copy(demo, tmp_path) -> Path:
    """A private copy of the demo's calibrated index, free to write to, with no scan history."""
    _, _, out = demo
    dst = tmp_path / "index"
    # without the demo's scan history (its moderation loop records one model): tests start from none
    shutil.copytree(out / "index", dst, ignore=shutil.ignore_patterns("lock", "moderation.sqlite*", "history"))
    return dst


@pytest.fixture
def portfolio_of(_portfolio_template):
    """``portfolio_of(dst, artists, works)``: the files ``write_portfolio(dst,
    artists, works)`` paints (up to 3 x 3), copied from the session's template."""
    return lambda dst, artists=3, works=3: copy_portfolio(_portfolio_template, Path(dst), artists, works)


@pytest.fixture(scope="session")
def demo_set(demo):
    """The demo's generated images as a :class:`mimicry.synthetic.SyntheticSet`
    (4 artists x 6 works, 3 imitations of each, 6 photos): a labelled set whose
    vectors the session already has. Read-only."""
    from mimicry.synthetic import SyntheticSet

    _, _, out = demo
    return SyntheticSet(out / "portfolios", out / "imitations", out / "unrelated", demo_truth(out))
