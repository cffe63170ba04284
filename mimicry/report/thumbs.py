"""Thumbnails embedded in a report as ``data:`` URIs, so the file opens from disk
with no network and no files beside it.

Each distinct image is encoded once (cached by its path or its bytes' hash):
a JPEG of at most :data:`SIDE` pixels a side. An image that cannot be read
gives None, and the report shows a labelled placeholder instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Union

from PIL import Image

from mimicry.images import ImageBytes

#: Longest side of a thumbnail in pixels, and its JPEG quality: about 6 KB per
#: image, so 200 samples with their evidence stay within a few MB.
SIDE = 160
QUALITY = 72

Source = Union[str, Path, ImageBytes, bytes, None]


class Thumbnails:
    """Encodes images as JPEG data URIs of at most ``side`` pixels, once each."""

    def __init__(self, side: int = SIDE, quality: int = QUALITY) -> None:
        self.side, self.quality = side, quality
        self._cache: dict[str, str | None] = {}

    def uri(self, source: Source) -> str | None:
        """The data URI of ``source`` (a path, an upload or bytes), or None when
        there is none or it cannot be decoded."""
        if source is None or source == "":
            return None
        data: bytes | None
        if isinstance(source, ImageBytes):
            data = source.data
        elif isinstance(source, bytes):
            data = source
        else:
            data = None
        key = hashlib.sha256(data).hexdigest() if data is not None else "path:" + str(source)
        if key not in self._cache:
            self._cache[key] = self._encode(io.BytesIO(data) if data is not None else Path(str(source)))
        return self._cache[key]

    def _encode(self, fp: Union[io.BytesIO, Path]) -> str | None:
        try:
            with Image.open(fp) as img:
                img.draft("RGB", (self.side, self.side))
                img = img.convert("RGB")
                img.thumbnail((self.side, self.side))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=self.quality, optimize=True)
        except Exception:  # noqa: BLE001 - any unreadable image becomes a placeholder
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
