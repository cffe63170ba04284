"""Fixtures of the face tests."""

from __future__ import annotations

import pytest

from mimicry import StyleIndex


@pytest.fixture
def index(calibrated_copy, default_embedder) -> StyleIndex:
    """The demo's calibrated index, a copy of this test's own, on the shared model."""
    return StyleIndex.open(calibrated_copy, embedder=default_embedder)
