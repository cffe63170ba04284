"""CLIP image towers through open_clip.

Two ways to name one:
- ``clip:ARCH/TAG``: an open_clip architecture and one of its pretrained tags
  (``clip:ViT-B-32/laion2b_s34b_b79k``). Weights come from open_clip's normal
  cache; they are downloaded only where a network exists (and not at all with
  ``HF_HUB_OFFLINE=1``).
- ``clip-file:ARCH:PATH``: an open_clip architecture and a local checkpoint file.

Either way the backbone id is ``open_clip:ARCH``, the weights file is hashed
and the recipe is read from the preprocessing open_clip actually built (size,
resize mode, interpolation, mean, std), so an index is pinned to the exact
weights and preprocessing that built it, whichever route brought them. A tag
whose pretrained config sets its own mean and std (most use open_clip's
defaults) gives another recipe than the bare file: opening its index through
``clip-file:`` is then the clear pin error, never a silent mix.
Vectors are the image tower's output, L2-normalised. With runtime ``onnx`` the
image tower is exported from the loaded weights (once, cached by weights sha256,
architecture and recipe) and runs on ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mimicry.backbones import Recipe, l2_normalise, resolve_device, torch_label
from mimicry.errors import BackboneError

#: Bump with any change here that moves CLIP vectors.
RECIPE_VERSION = 1


def _hf_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub always ships with open_clip
        return os.path.expanduser("~/.cache/huggingface/hub")


def resolve_pretrained(arch: str, tag: str, cache_dir: str | None = None) -> str:
    """Local path of the weights for ``arch``/``tag`` from open_clip's cache.

    Raises :class:`BackboneError` naming the model, where it looked and how to
    supply a file, when the weights are not there and cannot be fetched.
    """
    import open_clip

    if arch not in open_clip.list_models():
        raise BackboneError(
            f"clip:{arch}/{tag}: open_clip has no architecture {arch!r} "
            f"(see open_clip.list_models())"
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise BackboneError(
            f"clip:{arch}/{tag}: open_clip knows no pretrained tag {tag!r} for {arch} "
            f"(known tags: {tags})"
        )
    where = cfg.get("hf_hub") or cfg.get("url") or cfg.get("file") or "?"
    looked = _hf_cache_dir(cache_dir) if cfg.get("hf_hub") else (
        cache_dir or os.path.expanduser("~/.cache/clip")
    )
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - any failure means: weights not available
        raise BackboneError(
            f"clip:{arch}/{tag}: weights not found. Looked for {where} in the open_clip "
            f"cache at {looked} and could not download them ({type(exc).__name__}). "
            f"Put the checkpoint file on this machine and use "
            f"--model clip-file:{arch}:/path/to/open_clip_pytorch_model.bin"
        ) from None
    if not path or not Path(path).is_file():
        raise BackboneError(
            f"clip:{arch}/{tag}: weights not found in {looked}; use "
            f"--model clip-file:{arch}:/path/to/checkpoint"
        )
    return str(path)


def recipe_of(model: torch.nn.Module) -> Recipe:
    """The recipe of an open_clip model, from the preprocessing it was built with."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    side = int(size if isinstance(size, int) else min(size))
    keys = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
    described = ", ".join(f"{k}={_plain(cfg[k])}" for k in keys if k in cfg)
    return Recipe(
        descriptor="open_clip image tower output, L2-normalised",
        version=RECIPE_VERSION,
        input_size=side,
        draft_size=side,
        preprocess=f"open_clip image transform ({described})",
    )


def _plain(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class _Tower(torch.nn.Module):
    """``encode_image`` as a module of its own (what is exported to ONNX)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


class OpenClipEmbedder:
    """An open_clip image tower as an :class:`~mimicry.backbones.Embedder`."""

    def __init__(
        self,
        arch: str,
        weights: str,
        backbone_id: str,
        device: str = "auto",
        preprocess_cfg: dict | None = None,
        runtime: str = "torch",
    ) -> None:
        import open_clip

        from mimicry.images import sha256_file

        if not Path(weights).is_file():
            raise BackboneError(
                f"{backbone_id}: checkpoint file {weights} does not exist; give the path "
                f"of an open_clip checkpoint (.bin, .pt or .safetensors)"
            )
        if arch not in open_clip.list_models():
            raise BackboneError(
                f"{backbone_id}: open_clip has no architecture {arch!r} "
                f"(see open_clip.list_models())"
            )
        self.backbone_id = backbone_id
        self.device = resolve_device(device)
        self.weights_sha256 = sha256_file(weights)
        kwargs = {}
        if preprocess_cfg:
            for key in ("mean", "std"):
                if key in preprocess_cfg:
                    kwargs[f"image_{key}"] = tuple(preprocess_cfg[key])
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                arch, pretrained=weights, device=self.device, **kwargs
            )
        except Exception as exc:  # noqa: BLE001 - a bad file is a user error
            raise BackboneError(
                f"{backbone_id}: could not load {weights} as open_clip {arch} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self.model = model.eval()
        self.transform = transform
        self.recipe = recipe_of(self.model)
        self.forward_batch = 8 if self.device == "cpu" else 256
        with torch.inference_mode():
            size = getattr(self.model.visual, "image_size", 224)
            size = size if isinstance(size, (tuple, list)) else (size, size)
            probe = torch.zeros(1, 3, *size, device=self.device)
            self.dim = int(self.model.encode_image(probe).shape[-1])
        self.onnx, self.runtime = None, torch_label()
        if runtime == "onnx":
            self._use_onnx(arch, tuple(size))

    def _use_onnx(self, arch: str, size: tuple[int, int]) -> None:
        from mimicry.backbones.onnx_runtime import Graph, cache_key, load, version_label
        from mimicry.settings import get_settings

        key = cache_key({"weights": self.weights_sha256, "arch": arch, "recipe": self.recipe.to_dict()})
        model = self.model
        graph = Graph(f"open_clip-{arch}", key, lambda: _Tower(model), torch.zeros(2, 3, *size), ["features"])
        self.onnx = load(graph, get_settings().home, torch.get_num_threads())
        self.runtime = version_label()
        self.model = None  # ONNX Runtime runs the tower now: the torch model (both towers) is let go

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        if self.onnx is not None:
            return l2_normalise(self.onnx.run(batch.numpy())[0])
        feats = self.model.encode_image(batch.to(self.device))
        return l2_normalise(feats.float().cpu().numpy())


def from_tag(spec: str, device: str = "auto", cache_dir: str | None = None,
             runtime: str = "torch") -> OpenClipEmbedder:
    """``ARCH/TAG`` from open_clip's cache."""
    import open_clip

    arch, sep, tag = spec.partition("/")
    if not sep or not arch or not tag:
        raise BackboneError(f"clip:{spec}: expected clip:ARCH/TAG, e.g. clip:ViT-B-32/openai")
    path = resolve_pretrained(arch, tag, cache_dir)
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    return OpenClipEmbedder(arch, path, f"open_clip:{arch}", device, preprocess_cfg=cfg, runtime=runtime)


def from_file(spec: str, device: str = "auto", runtime: str = "torch") -> OpenClipEmbedder:
    """``ARCH:PATH``, a local checkpoint."""
    arch, sep, path = spec.partition(":")
    if not sep or not arch or not path:
        raise BackboneError(
            f"clip-file:{spec}: expected clip-file:ARCH:PATH, e.g. "
            f"clip-file:ViT-B-32:/models/open_clip_pytorch_model.bin"
        )
    return OpenClipEmbedder(arch, path, f"open_clip:{arch}", device, runtime=runtime)
