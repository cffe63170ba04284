"""mimicry: detect imitation of registered artists' styles.

The Python API is the product; the CLI, service and report are thin faces on it::

    from mimicry import StyleIndex
    index = StyleIndex.create("my-index")          # default offline backbone
    index.add_folder("portfolios/")                # one sub-folder per artist
    for result in index.scan(["suspect.png"]):
        print(result.image, result.matches[0].artist, result.matches[0].score)
"""

from __future__ import annotations

__version__ = "0.1.0"

from mimicry.index import IndexMismatchError, StyleIndex  # noqa: E402
from mimicry.results import (  # noqa: E402
    Evidence,
    IndexReport,
    Match,
    ScanResult,
    Skipped,
)

__all__ = [
    "Evidence",
    "IndexMismatchError",
    "IndexReport",
    "Match",
    "ScanResult",
    "Skipped",
    "StyleIndex",
    "__version__",
]
