"""The golden-vector check itself: an update run writes the file and fails,
saying so; a normal run passes on matching vectors and fails on moved ones or
a changed recipe."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import golden_vectors
from mimicry.engines import Embedded

VECTORS = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A golden folder of its own and an embedder whose vectors the test sets."""
    monkeypatch.setattr(golden_vectors, "GOLDEN", tmp_path)
    state = {"vectors": VECTORS}

    class FakeEngine:
        """Yields the vectors the test sets, whatever the sources."""

        def __init__(self, embedder) -> None:
            pass

        def embed(self, sources, **kwargs):
            n = len(state["vectors"])
            yield Embedded(list(range(n)), state["vectors"], ["0" * 64] * n, [])

    monkeypatch.setattr(golden_vectors, "LocalEngine", FakeEngine)
    recipe = SimpleNamespace(to_dict=lambda: {"version": 7})
    return tmp_path, state, SimpleNamespace(recipe=recipe, dim=VECTORS.shape[1])


def test_update_writes_then_fails(fake, monkeypatch):
    folder, _, embedder = fake
    monkeypatch.setenv("MIMICRY_UPDATE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="wrote .*fake.json"):
        golden_vectors.check_golden("fake", embedder)
    stored = json.loads((folder / "fake.json").read_text())
    assert stored["recipe"] == {"version": 7}
    np.testing.assert_allclose(stored["vectors"], VECTORS, atol=1e-7)


def test_check_passes_and_fails_on_moved_vectors(fake, monkeypatch):
    folder, state, embedder = fake
    monkeypatch.delenv("MIMICRY_UPDATE_GOLDEN", raising=False)
    (folder / "fake.json").write_text(json.dumps({"recipe": {"version": 7}, "vectors": VECTORS.tolist()}))
    golden_vectors.check_golden("fake", embedder)
    state["vectors"] = VECTORS + np.float32(1e-3)
    with pytest.raises(AssertionError, match="vectors moved"):
        golden_vectors.check_golden("fake", embedder)
    embedder.recipe.to_dict = lambda: {"version": 8}
    with pytest.raises(AssertionError, match="recipe changed"):
        golden_vectors.check_golden("fake", embedder)
