"""The evaluation's plots, drawn with matplotlib: SVG data URIs for the
report, and the ROC curve as ``roc.png`` beside ``metrics.json``."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Sequence

import numpy as np


def _svg_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    return plt.subplots(figsize=(width, height))


def _rate(fpr: float) -> str:
    """A rate as a short percentage: 0.01 -> "1%", 0.005 -> "0.5%"."""
    return f"{fpr * 100:g}%"


def _draw_roc(ax, imitation: Sequence[float], negative: Sequence[float], auc: float | None, fpr: float) -> None:
    """The ROC curve of imitations against negatives (when both exist), the
    chance diagonal, and a vertical line at the calibrated rate ``fpr``."""
    from sklearn.metrics import roc_curve

    if len(imitation) and len(negative):
        labels = np.r_[np.ones(len(imitation)), np.zeros(len(negative))]
        f, t, _ = roc_curve(labels, np.r_[imitation, negative])
        ax.plot(f, t, lw=2, label="ROC" + (f" (AUC {auc:.3f})" if auc is not None and auc == auc else ""))
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.axvline(fpr, ls="--", c="#b00020", lw=1, label=f"{_rate(fpr)} false positives (calibrated)")
    ax.set_xlabel("false-positive rate (negatives)")
    ax.set_ylabel("true-positive rate (imitations)")
    ax.legend(loc="lower right", fontsize=8)


def roc_svg(imitation: Sequence[float], negative: Sequence[float], auc: float | None,
            fpr: float = 0.01) -> str | None:
    """The ROC curve of imitations against negatives, marked at the calibrated
    rate ``fpr`` (None without both)."""
    if not len(imitation) or not len(negative):
        return None
    fig, ax = _figure(4.2, 4.0)
    _draw_roc(ax, imitation, negative, auc, fpr)
    return _svg_uri(fig)


def roc_png(imitation: Sequence[float], negative: Sequence[float], auc: float | None, fpr: float,
            path: str | Path) -> Path:
    """Writes the ROC curve (:func:`roc_svg`'s, titled; axes alone without
    both kinds of score) as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig, ax = _figure(5.0, 5.0)
    _draw_roc(ax, imitation, negative, auc, fpr)
    ax.set_title("imitation vs negative, image statistic")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def distribution_svg(imitation: Sequence[float], negative: Sequence[float],
                     threshold: float | None) -> str | None:
    """Histograms of the image statistic for imitations and negatives, with
    the flag threshold marked (None without any score)."""
    if not len(imitation) and not len(negative):
        return None
    fig, ax = _figure(5.0, 3.2)
    values = np.r_[imitation, negative]
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-6, 40)
    if len(negative):
        ax.hist(negative, bins=bins, alpha=0.6, color="#5a6b7b", label=f"negatives ({len(negative)})",
                density=True)
    if len(imitation):
        ax.hist(imitation, bins=bins, alpha=0.6, color="#d2691e", label=f"imitations ({len(imitation)})",
                density=True)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, c="#b00020", lw=2, label=f"flag threshold {threshold:.3f}")
    ax.set_xlabel("image statistic (hubness-corrected similarity of the nearest artist)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _svg_uri(fig)
