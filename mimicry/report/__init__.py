"""Self-contained HTML reports a moderator or an artist can look at.

:func:`scan_report`, :func:`model_report` and :func:`evaluation_report` turn a
result of the Python API into one HTML file: Jinja2 templates under
``templates/``, one stylesheet under ``static/`` inlined, images embedded as
thumbnails (:mod:`mimicry.report.thumbs`) and plots as SVG
(:mod:`mimicry.report.plots`). Nothing in a report loads from the network.
:func:`write_report` writes one atomically.
"""

from mimicry.report.render import evaluation_report, model_report, scan_report, write_report

__all__ = ["evaluation_report", "model_report", "scan_report", "write_report"]
