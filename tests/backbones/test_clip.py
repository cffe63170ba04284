"""CLIP through open_clip: a tiny architecture with random weights, saved and
loaded back through both user routes (a file; open_clip's cache, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from golden_vectors import check_golden, golden_sources  # noqa: E402
from helpers import noise_image  # noqa: E402
from mimicry import StyleIndex  # noqa: E402
from mimicry.backbones import BackboneError, load_embedder  # noqa: E402
from mimicry.engines import Embedded  # noqa: E402
from mimicry.engines.local import LocalEngine  # noqa: E402

ARCH = "mimicry-test-tiny-vit"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Registers the tiny architecture, saves a random-init model, returns
    (checkpoint path, reference model)."""
    root = tmp_path_factory.mktemp("clip")
    cfg = root / f"{ARCH}.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    ckpt = root / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), ckpt)
    return ckpt, model


def reference_vectors(model, embedder, paths):
    from mimicry.images import load_image

    batch = torch.stack([embedder.preprocess(load_image(p)) for p in paths])
    with torch.inference_mode():
        ref = model.encode_image(batch).numpy()
    return ref / np.linalg.norm(ref, axis=1, keepdims=True)


def test_checkpoint_file_route(tmp_path, tiny):
    ckpt, model = tiny
    emb = load_embedder(f"clip-file:{ARCH}:{ckpt}", "cpu")
    assert emb.dim == 32
    paths = [noise_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    got = np.concatenate([b.vectors for b in LocalEngine(emb).embed(paths, batch_size=2)])
    assert np.allclose(got, reference_vectors(model, emb, paths), atol=1e-5)


def test_cache_route_offline(tmp_path, tiny, monkeypatch):
    """clip:ARCH/TAG resolved from a Hugging Face cache laid out as open_clip
    downloads it, with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants
    from open_clip import pretrained

    ckpt, model = tiny
    repo = "mimicry-tests/tiny-clip"
    cache = tmp_path / "hub"
    snap = cache / "models--mimicry-tests--tiny-clip" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(ckpt.read_bytes())
    (cache / "models--mimicry-tests--tiny-clip" / "refs").mkdir()
    (cache / "models--mimicry-tests--tiny-clip" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setitem(pretrained._PRETRAINED, ARCH, {"tiny": {"hf_hub": f"{repo}/"}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    emb = load_embedder(f"clip:{ARCH}/tiny", "cpu")
    file_emb = load_embedder(f"clip-file:{ARCH}:{ckpt}", "cpu")
    assert emb.weights_sha256 == file_emb.weights_sha256
    assert emb.recipe == file_emb.recipe and emb.backbone_id == file_emb.backbone_id
    same = [Embedded.gather(LocalEngine(e).embed(golden_sources()), e.dim).vectors for e in (emb, file_emb)]
    assert np.array_equal(same[0], same[1])  # both routes: the same vectors
    paths = [noise_image(tmp_path / f"{i}.png", seed=10 + i) for i in range(2)]
    got = np.concatenate([b.vectors for b in LocalEngine(emb).embed(paths)])
    assert np.allclose(got, reference_vectors(model, emb, paths), atol=1e-5)

    # An index built through the cache opens through the file: same weights.
    ix = StyleIndex.create(tmp_path / "ix", model=f"clip:{ARCH}/tiny", device="cpu")
    ix.add_artist("someone", paths)
    StyleIndex.open(tmp_path / "ix", embedder=file_emb)

    # Weights missing from the cache: one clear error naming model, place, remedy.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(BackboneError) as err:
        load_embedder(f"clip:{ARCH}/tiny", "cpu")
    msg = str(err.value)
    assert f"clip:{ARCH}/tiny" in msg and repo in msg and "clip-file:" in msg


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_clip_gives_its_golden_vectors(tiny, runtime):
    """A random-init model with a fixed seed, saved and loaded back: the recipe
    (read from open_clip's own preprocessing) and the vectors are pinned, on
    either runtime (ONNX Runtime runs the tower exported from those weights)."""
    ckpt, _ = tiny
    emb = load_embedder(f"clip-file:{ARCH}:{ckpt}", "cpu", runtime)
    assert emb.runtime.split()[0] == {"torch": "torch", "onnx": "onnxruntime"}[runtime]
    assert emb.recipe.input_size == emb.recipe.draft_size == 32
    assert "mean=(0.481455" in emb.recipe.preprocess and "interpolation=bicubic" in emb.recipe.preprocess
    check_golden("clip-tiny-random", emb)


def test_unknown_tag_and_missing_file_are_clear(tmp_path, tiny):
    with pytest.raises(BackboneError, match="no pretrained tag"):
        load_embedder(f"clip:{ARCH}/nonesuch", "cpu")
    with pytest.raises(BackboneError, match="does not exist"):
        load_embedder(f"clip-file:{ARCH}:{tmp_path / 'missing.bin'}", "cpu")
