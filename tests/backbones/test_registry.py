"""Backbones come from one registry: names map to factories; unknown names are clear errors."""

from __future__ import annotations

import pytest

from mimicry.backbones import REGISTRY, load_embedder, model_specs
from mimicry.errors import BackboneError


def test_registry_lists_every_spec_the_cli_accepts():
    assert model_specs() == ["default", "efficientnet-lite0", "clip:ARCH/TAG", "clip-file:ARCH:PATH"]
    assert REGISTRY[2].matches("clip:ViT-B-32/openai") == "ViT-B-32/openai"
    assert REGISTRY[3].matches("clip-file:ViT-B-32:/m.bin") == "ViT-B-32:/m.bin"
    assert REGISTRY[0].matches("defaultx") is None and REGISTRY[2].matches("default") is None


def test_default_and_its_alias_build_the_same_backbone(fresh_embedder):
    alias = load_embedder("efficientnet-lite0", "cpu")
    assert (alias.backbone_id, alias.weights_sha256, alias.recipe) == (
        fresh_embedder.backbone_id, fresh_embedder.weights_sha256, fresh_embedder.recipe)


def test_unknown_model_names_the_forms_it_accepts():
    with pytest.raises(BackboneError, match="unknown model 'resnet-9000'") as err:
        load_embedder("resnet-9000", "cpu")
    assert "clip-file:ARCH:PATH" in str(err.value) and err.value.code == "backbone_unavailable"
