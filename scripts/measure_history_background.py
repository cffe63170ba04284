"""How a calibration from the scan history holds its promise when imitations
hide in the history, for each way of keeping flagged and confirmed uploads
out of it.

Real data (never copied into the repository): the portfolio is the genuine
works of ``dev/manifest.csv``; the history's ordinary uploads are the works of
half the makers of ``reference/images`` (one folder = one maker = one
uploader), with the manifest's style-transfer imitations mixed in at 5% (the
uploader of an imitation: the repository that published it); the other half
of the makers is held out, and ``background_flagged`` (the share of held-out
images flagged as anyone) is measured on it.

The hub's loop, through a real moderation database and
:func:`mimicry.moderation.background.sample`:

1. round 0: the first calibration from the history, nothing decided yet;
2. the history is scanned under it; each flagged upload opens a case, and the
   moderators confirm the imitations and dismiss the rest;
3. rounds 1 to 4: the calibration refreshed from the history, then the
   history scanned again and the new flags decided, under each rule:
   ``drop-confirmed`` (mimicry's rule: every upload of an uploader with a
   confirmed case left out) and ``drop-flagged`` (every upload flagged so far
   left out); round 0 is ``keep-all`` (nothing left out), and ``clean`` (no
   imitations at all) is the reference.

Prints, per rule, ``background_flagged`` (mean and max over ``--splits``
seeded splits of the makers) and the share of the imitations flagged.
Vectors are cached by content under ``--cache`` (first run: about 90 s of embedding).

    python scripts/measure_history_background.py --eval ../shared/eval --cache /tmp/cache [--splits 10]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mimicry.calibration import calibrate  # noqa: E402
from mimicry.flagging import judge  # noqa: E402
from mimicry.moderation import cases  # noqa: E402
from mimicry.moderation.background import sample  # noqa: E402
from mimicry.moderation.db import ModerationDB  # noqa: E402
from mimicry.scoring import artist_columns, artist_max, neighbourhood  # noqa: E402

IMITATION_SHARE = 0.05
#: Refreshes of the calibration measured per rule.
ROUNDS = 4


def load(eval_dir: Path, cache: Path) -> dict:
    """Vectors of the reference makers, the portfolio and the imitations."""
    from mimicry.backbones import load_embedder
    from mimicry.vector_cache import embed_cached

    with open(eval_dir / "dev" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    genuine = [r for r in rows if r["role"] == "genuine"]
    imitations = [r for r in rows if r["role"] == "imitation"]
    ref = sorted(p for p in (eval_dir / "reference" / "images").rglob("*") if p.is_file())
    dev = [eval_dir / "dev" / r["path"] for r in genuine + imitations]
    emb = load_embedder("default", "cpu")
    got = embed_cached(emb, ref + dev, cache)
    vec = dict(zip(got.keys, got.vectors))
    ref = [p for p in ref if p in vec]

    def of(rs: list[dict]) -> list[Path]:
        return [eval_dir / "dev" / r["path"] for r in rs if eval_dir / "dev" / r["path"] in vec]

    return {"ref": np.stack([vec[p] for p in ref]), "ref_makers": np.array([p.parent.name for p in ref]),
            "works": np.stack([vec[p] for p in of(genuine)]),
            "artists": [r["artist"] for r in genuine if eval_dir / "dev" / r["path"] in vec],
            "imit": np.stack([vec[p] for p in of(imitations)]),
            "imit_uploaders": np.array([r["source_repo"] for r in imitations if eval_dir / "dev" / r["path"] in vec])}


def flagged(cal, d: dict, bg: np.ndarray, queries: np.ndarray, bg_uploaders: np.ndarray | None = None,
            uploaders: np.ndarray | None = None) -> np.ndarray:
    """Whether each query is flagged as anyone under ``cal`` (the scan's rule);
    with uploaders, a query's own uploader's images are left out of its
    neighbourhood, as they were not in the background when it was uploaded."""
    raw = artist_max(queries, d["works"], artist_columns(d["artists"], cal.artists))
    return judge(raw, neighbourhood(queries, bg, cal.k, uploaders, bg_uploaders), cal).flagged


def record(mdb: ModerationDB, vecs: np.ndarray, uploaders: np.ndarray) -> None:
    """The history: one scan per upload, its uploader and its vector."""
    now = time.time()
    with mdb.transaction() as db:
        db.executemany("INSERT INTO scans(id, at, kind, upload_id, uploader, tier, result) "
                       "VALUES(?, ?, 'image', ?, ?, 'not-flagged', '{}')",
                       [(i + 1, now, f"up-{i}", str(u)) for i, u in enumerate(uploaders)])
        db.executemany("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                       "VALUES(?, 0, ?, 'x', ?, 'not-flagged')",
                       [(i + 1, f"{i:064x}", v.astype(np.float32).tobytes()) for i, v in enumerate(vecs)])


def moderate(mdb: ModerationDB, hit: np.ndarray, is_imitation: np.ndarray) -> None:
    """A case for each flagged upload: confirmed when it is an imitation, else dismissed."""
    for i in np.flatnonzero(hit):
        with mdb.transaction() as db:
            case_id, _ = cases.open_case(db, "upload", f"up-{i}", int(i) + 1, "flagged", ["someone"])
        cases.decide(mdb, case_id, "confirm" if is_imitation[i] else "dismiss", "", "measure")


def split(d: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(history vectors, their uploaders, which are imitations, held-out vectors) of one split."""
    rng = np.random.default_rng(seed)
    makers = np.unique(d["ref_makers"])
    held = set(rng.choice(makers, len(makers) // 2, replace=False))
    is_held = np.isin(d["ref_makers"], list(held))
    n_imit = len(d["imit"])
    n_ord = min(int((~is_held).sum()), round(n_imit * (1 - IMITATION_SHARE) / IMITATION_SHARE))
    ordinary = rng.choice(np.flatnonzero(~is_held), n_ord, replace=False)
    vecs = np.concatenate([d["ref"][ordinary], d["imit"]])
    uploaders = np.concatenate([d["ref_makers"][ordinary], d["imit_uploaders"]])
    is_imit = np.r_[np.zeros(n_ord, bool), np.ones(n_imit, bool)]
    return vecs, uploaders, is_imit, d["ref"][is_held]


def one_split(d: dict, seed: int, rate: float, folder: Path) -> dict[str, tuple[float, float]]:
    """Per rule: (background_flagged on the held-out makers, share of imitations flagged)."""
    vecs, uploaders, is_imit, held = split(d, seed)
    folder.mkdir(parents=True)
    mdb = ModerationDB(folder)
    record(mdb, vecs, uploaders)
    out = {}

    def measure(name: str, keep: np.ndarray) -> object:
        bg, groups = vecs[keep], np.unique(uploaders[keep], return_inverse=True)[1]
        cal = calibrate(d["works"], d["artists"], bg, target_rate=rate, background_groups=groups)
        out[name] = (float(flagged(cal, d, bg, held).mean()),
                     float(flagged(cal, d, bg, vecs[is_imit], uploaders[keep], uploaders[is_imit]).mean()))
        return cal

    everyone = np.ones(len(vecs), bool)
    cal = measure("round 0 (nothing decided)", everyone)
    measure("clean (no imitations)", ~is_imit)
    start = flagged(cal, d, vecs, vecs, uploaders, uploaders)
    decided, keep = np.zeros(len(vecs), bool), everyone
    for r in range(1, ROUNDS + 1):  # mimicry's rule, through the moderation database
        hit = flagged(cal, d, vecs[keep], vecs, uploaders[keep], uploaders) & ~decided
        moderate(mdb, hit, is_imit)
        decided |= hit
        kept = sample(mdb, vecs.shape[1])
        keep = ~np.isin(uploaders, list(set(uploaders[decided & is_imit])))
        assert len(kept.vectors) == int(keep.sum())
        cal = measure(f"drop-confirmed, round {r} (mimicry)", keep)
    keep = ~start
    for r in range(1, ROUNDS + 1):
        cal = measure(f"drop-flagged, round {r}", keep)
        keep = keep & ~flagged(cal, d, vecs[keep], vecs, uploaders[keep], uploaders)
    mdb.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", type=Path, default=Path("../shared/eval"))
    ap.add_argument("--cache", type=Path, required=True, help="vector cache folder (outside the repository)")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--fpr", type=float, default=0.01)
    args = ap.parse_args()
    d = load(args.eval, args.cache)
    print(f"portfolio {len(d['works'])} works by {len(set(d['artists']))} artists; reference {len(d['ref'])} works "
          f"by {len(np.unique(d['ref_makers']))} makers; {len(d['imit'])} imitations; fpr {args.fpr}")
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.splits):
            for name, v in one_split(d, seed, args.fpr, Path(tmp) / str(seed)).items():
                results.setdefault(name, []).append(v)
    print(f"{'rule':32} {'background_flagged mean':>24} {'max':>7} {'imitations flagged':>19}")
    for name, vals in results.items():
        a = np.array(vals)
        print(f"{name:32} {a[:, 0].mean():24.4f} {a[:, 0].max():7.4f} {a[:, 1].mean():19.3f}")
    print(f"target: background_flagged at most {args.fpr + 0.005:.3f}")


if __name__ == "__main__":
    main()
