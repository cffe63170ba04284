"""Finding the uploaders with a confirmed case (what ``calibrate --from-history``
and the scheduled refresh leave out), on a synthetic history: ``--scans``
recorded scans (80% single uploads, 20% models, 90% with a hub id), one case
per twentieth upload or model, ``--confirmed`` of them confirmed. Times the
query as shipped (indexed lookups per case) and the single ``OR`` join it
replaced, side by side (alternating, ``--repeats`` each), checks that both find
the same uploaders, and prints the medians and their ratio.

    python scripts/bench_history_join.py [--scans 100000] [--confirmed 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mimicry.moderation.background import _CONFIRMED_UPLOADERS  # noqa: E402
from mimicry.moderation.db import ModerationDB  # noqa: E402

#: The join before: one OR condition, which SQLite answers by reading every scan for each case.
OR_JOIN = """
SELECT DISTINCT s.uploader FROM cases c JOIN scans s
  ON (c.kind = 'upload' AND s.kind = 'image' AND (s.upload_id = c.key OR 'scan:' || s.id = c.key))
  OR (c.kind = 'model' AND s.kind = 'model' AND (s.model_id = c.key OR 'scan:' || s.id = c.key))
WHERE c.state = 'confirmed' AND s.uploader IS NOT NULL
"""


def history(folder: Path, n_scans: int, n_confirmed: int, seed: int = 0) -> ModerationDB:
    rng = np.random.default_rng(seed)
    mdb = ModerationDB(folder)
    rows = []
    for i in range(1, n_scans + 1):
        kind = "image" if rng.random() < 0.8 else "model"
        hub = f"hub-{i}" if rng.random() < 0.9 else None
        rows.append((i, kind, hub if kind == "image" else None, hub if kind == "model" else None,
                     f"uploader-{rng.integers(n_scans // 20)}"))
    with mdb.transaction() as db:
        db.executemany("INSERT INTO scans(id, at, kind, upload_id, model_id, uploader, tier, result) "
                       "VALUES(?, 0, ?, ?, ?, ?, 'x', '{}')", rows)
        cases = []
        for i, kind, upload, model, _ in rows[::20]:
            key = upload or model or f"scan:{i}"
            cases.append(("upload" if kind == "image" else "model", key, i))
        confirmed = set(rng.choice(len(cases), min(n_confirmed, len(cases)), replace=False).tolist())
        db.executemany("INSERT INTO cases(kind, key, scan_id, state, tier, artist, artists, opened_at, updated_at) "
                       "VALUES(?, ?, ?, ?, 'flagged', 'a', '[\"a\"]', 0, 0)",
                       [(k, key, sid, "confirmed" if j in confirmed else "open")
                        for j, (k, key, sid) in enumerate(cases)])
    return mdb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=100_000)
    ap.add_argument("--confirmed", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mdb = history(Path(tmp), args.scans, args.confirmed)
        times: dict[str, list[float]] = {"indexed": [], "or-join": []}
        found = {}
        for _ in range(args.repeats):
            for name, sql in (("indexed", _CONFIRMED_UPLOADERS), ("or-join", OR_JOIN)):
                start = time.perf_counter()
                found[name] = {u for (u,) in mdb.read(sql)}
                times[name].append(time.perf_counter() - start)
        assert found["indexed"] == found["or-join"], "the two queries disagree"
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.scans} scans, {args.confirmed} confirmed cases, {len(found['indexed'])} uploaders left out")
        for name, t in med.items():
            print(f"  {name:8s} median {t * 1000:9.1f} ms  ({', '.join(f'{x * 1000:.1f}' for x in times[name])})")
        print(f"  or-join / indexed: {med['or-join'] / med['indexed']:.0f}x")


if __name__ == "__main__":
    main()
