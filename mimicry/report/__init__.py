"""Self-contained HTML reports a moderator or an artist can look at.

:func:`scan_report`, :func:`model_report` and :func:`evaluation_report` turn a
result of the Python API into one HTML file: Jinja2 templates under
``templates/``, one stylesheet under ``static/`` inlined, images embedded as
thumbnails (:mod:`mimicry.report.thumbs`) and plots as SVG
(:mod:`mimicry.report.plots`). Nothing in a report loads from the network.
:func:`write_report` writes one atomically; :func:`write_named` is how the
command line asks for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mimicry.errors import InputError
from mimicry.report.render import evaluation_report, model_report, scan_report, write_report

__all__ = ["evaluation_report", "model_report", "scan_report", "write_named", "write_report"]


def write_named(path: str | Path, kind: str, results: Sequence[object], command: str) -> None:
    """Writes the report ``kind`` (``scan_report``, ``model_report``,
    ``evaluation_report``) of ``results`` to ``path``, headed by ``command``
    (the command line that asked for it); a path that cannot be written is
    :class:`InputError` naming it."""
    try:
        write_report(globals()[kind](*results, command), path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
