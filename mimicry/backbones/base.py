"""The one protocol every backbone meets, and the device choice they share."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image


class BackboneError(Exception):
    """A backbone cannot be built: the message names the model, where it looked,
    and what the user can do."""


@runtime_checkable
class Embedder(Protocol):
    """Turns RGB images into float32, L2-normalised vectors of a fixed dimension.

    ``model_id`` and ``weights_sha256`` pin an index to this exact model;
    ``preprocess`` runs on decoding threads (PIL image -> CHW float tensor) and
    ``embed_tensors`` runs the model on a stacked batch.
    """

    model_id: str
    weights_sha256: str
    dim: int
    device: str

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """``auto`` takes CUDA where torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
