"""The one protocol every backbone meets, its recipe, and the device choice they share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mimicry.errors import BackboneError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from PIL import Image

__all__ = ["BackboneError", "Embedder", "Recipe", "l2_normalise", "resolve_device"]

#: How files become pixels (:mod:`mimicry.images`): Pillow, JPEG DCT draft
#: down to the recipe's ``draft_size``, EXIF turn, RGB with alpha on white.
DECODER = "pillow; jpeg dct draft; exif transpose; rgb, alpha on white; v1"


@dataclass(frozen=True)
class Recipe:
    """How pixels become a vector, pinned with the weights in every index.

    Two embedders with equal weights and equal recipes give the same vectors
    (to float rounding); any change that moves vectors must change the recipe
    (the golden tests enforce it), so an index built another way is refused
    with a clear re-index error instead of mixing vector spaces.
    """

    descriptor: str  # what the vector is, e.g. "stage-stats"
    version: int  # bumped whenever anything here changes vectors
    input_size: int  # pixels of the model's square input
    draft_size: int | None  # JPEGs decode at reduced scale, never below this short side
    preprocess: str  # resize, crop and normalisation, exactly
    decoder: str = DECODER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Embedder(Protocol):
    """Turns RGB images into float32, L2-normalised vectors of a fixed dimension.

    ``backbone_id``, ``weights_sha256`` and ``recipe`` pin an index to this exact
    model and way of using it; ``preprocess`` runs on decoding threads (PIL
    image -> CHW tensor) and ``embed_tensors`` runs the model on a stacked batch.
    Forward passes may run from several threads at once. ``forward_batch`` is
    how many images one forward pass takes best on this device: the embedding
    loop runs the model as soon as that many are decoded (optional; without it,
    a whole batch). Vectors never depend on how images are grouped into passes.
    """

    backbone_id: str
    weights_sha256: str
    dim: int
    device: str
    recipe: Recipe
    forward_batch: int

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """``auto`` takes CUDA where torch sees a GPU, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackboneError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
