"""mimicry: detect imitation of registered artists' styles.

The Python API is the product; the CLI, service and report are thin faces on it::

    from mimicry import StyleIndex
    index = StyleIndex.create("my-index")          # default offline backbone
    index.add_folder("portfolios/")                # one sub-folder per artist
    for result in index.scan(["suspect.png"]):
        print(result.image, result.matches[0].artist, result.matches[0].score)

Names are imported on first use, so ``import mimicry`` (and ``mimicry --help``)
stays fast: torch and FAISS load only when a command needs them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "StyleIndex": "mimicry.index",
    "IndexInfo": "mimicry.results",
    "IndexReport": "mimicry.results",
    "Evidence": "mimicry.results",
    "Match": "mimicry.results",
    "ScanResult": "mimicry.results",
    "Skipped": "mimicry.results",
    "ModelVerdict": "mimicry.results",
    "ArtistFinding": "mimicry.results",
    "SupportingSample": "mimicry.results",
    "ImageBytes": "mimicry.images",
    "MimicryError": "mimicry.errors",
    "Settings": "mimicry.settings",
    "get_settings": "mimicry.settings",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mimicry' has no attribute {name!r}")
