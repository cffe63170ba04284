"""Evaluation on a labelled manifest: how well imitations are attributed and
separated from negatives, measured through the same API users call.

A manifest is a CSV with columns ``path, role, artist`` (role: genuine,
imitation, negative; other columns ignored; paths relative to the manifest's
folder or absolute). Genuine rows become the portfolio; the rest are scanned.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mimicry.backbones import DEFAULT_MODEL, load_embedder
from mimicry.embedding import embed_paths
from mimicry.index import StyleIndex
from mimicry.scoring import artist_score_matrix


@dataclass
class Metrics:
    """Attribution and detection metrics (see README, "Accuracy")."""

    top1: float
    top3: float
    auc: float
    tpr_at_1pct_fpr: float
    n_genuine: int
    n_imitation: int
    n_negative: int
    n_skipped: int
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    path: Path
    role: str
    artist: str


def read_manifest(path: str | Path) -> list[Row]:
    """Rows of a ``path, role, artist`` manifest, paths made absolute."""
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            p = Path(r["path"])
            rows.append(Row(p if p.is_absolute() else (path.parent / p).resolve(),
                            r["role"].strip(), (r.get("artist") or "").strip()))
    return rows


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float = 0.01) -> float:
    """True-positive rate at the largest threshold whose false-positive rate is
    at most ``fpr_target`` (no interpolation above the target)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def evaluate(manifest: str | Path, model: str = DEFAULT_MODEL, device: str = "auto",
             batch_size: int = 32) -> Metrics:
    """Indexes the genuine rows into a fresh index, scans the others, scores them."""
    import tempfile

    rows = read_manifest(manifest)
    embedder = load_embedder(model, device)
    with tempfile.TemporaryDirectory() as tmp:
        ix = StyleIndex.create(Path(tmp) / "index", model=model, embedder=embedder)
        genuine: dict[str, list[Path]] = {}
        for r in rows:
            if r.role == "genuine":
                genuine.setdefault(r.artist, []).append(r.path)
        report = ix.sync(genuine, prune=True, batch_size=batch_size)
        ids, vecs = ix.vectors()
        work_by_id = {w.id: w.artist for w in ix.works()}
        work_artists = [work_by_id[int(i)] for i in ids]
        artists = sorted(set(work_artists))
        queries = [r for r in rows if r.role in ("imitation", "negative")]
        got: dict[Path, np.ndarray] = {}
        skipped = [{"path": s.path, "reason": s.reason} for s in report.skipped]
        for batch in embed_paths(embedder, [r.path for r in queries], batch_size=batch_size):
            got.update(zip(batch.paths, batch.vectors))
            skipped += [{"path": e.path, "reason": e.reason} for e in batch.errors]
        ix.close()
    queries = [r for r in queries if r.path in got]
    scores = artist_score_matrix(np.stack([got[r.path] for r in queries]), vecs, work_artists, artists)
    return _metrics(queries, scores, artists, report.works, skipped)


def _metrics(queries: list[Row], scores: np.ndarray, artists: list[str], n_genuine: int,
             skipped: list[dict]) -> Metrics:
    names = np.asarray(artists)
    imi = np.array([r.role == "imitation" and r.artist in artists for r in queries])
    # An imitation of an artist with no portfolio is art no registered artist
    # made: it must not be flagged, so it counts as a negative.
    neg = np.array([r.role == "negative" or (r.role == "imitation" and r.artist not in artists)
                    for r in queries])
    order = np.argsort(-scores, axis=1)
    truth = np.array([r.artist for r in queries])
    top1 = float(np.mean(names[order[imi, 0]] == truth[imi])) if imi.any() else float("nan")
    top3 = float(np.mean([t in names[o[:3]] for t, o in zip(truth[imi], order[imi])])) if imi.any() else float("nan")
    best = scores.max(axis=1)
    labels = np.r_[np.ones(imi.sum()), np.zeros(neg.sum())]
    s = np.r_[best[imi], best[neg]]
    auc = float(roc_auc_score(labels, s)) if imi.any() and neg.any() else float("nan")
    tpr = tpr_at_fpr(labels, s) if imi.any() and neg.any() else float("nan")
    return Metrics(top1, top3, auc, tpr, n_genuine, int(imi.sum()), int(neg.sum()), len(skipped), skipped)


def write_metrics(metrics: Metrics, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics.to_dict(), indent=2) + "\n")
    return path
