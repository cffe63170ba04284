"""The demo's moderation loop: a model is scanned (and recorded) before the
artist it imitates registers; when they register, a lookback re-screens the
recorded history from its stored vectors and opens a case about them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mimicry.images import ImageBytes
from mimicry.index import StyleIndex
from mimicry.moderation import cases, history, lookback
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import HubIds

MODEL_ID = "demo-model-1"


@dataclass(frozen=True)
class LoopResult:
    """What the loop did: the tier the model had before the artist registered,
    the lookback's id and how many recorded images it re-screened, and the
    case about the artist afterwards (None if none)."""

    tier_before: str
    artists_before: list[str]
    lookback_id: int
    screened: int
    case_id: int | None
    case_tier: str | None
    case_artists: list[str]


def record_model_scan(ix: StyleIndex, samples: Path) -> tuple[ModerationDB, tuple[str, list[str]]]:
    """Scans the samples in ``samples`` as one model, as the service would, and
    records the verdict in the index's moderation database; (db, (tier, artists))."""
    files = sorted(samples.glob("*.png"))
    uploads = [ImageBytes(p.name, p.read_bytes()) for p in files]
    verdict = ix.scan_model(uploads)
    mdb = ModerationDB(ix.folder)
    history.record_model(mdb, verdict, [u.data for u in uploads], HubIds(None, MODEL_ID, "demo-uploader"))
    return mdb, history.model_tier(verdict)


def register_and_look_back(ix: StyleIndex, mdb: ModerationDB, artist: str, works: Path,
                           before: tuple[str, list[str]]) -> LoopResult:
    """Adds ``artist``'s works (the calibration follows) and runs the lookback
    for them on this thread; the case about them afterwards."""
    ix.add_artist(artist, [works])
    lookback_id = lookback.begin(mdb, artist)
    done = lookback.run(mdb, ix.snapshot(), lookback_id)
    found, _ = cases.list_cases(mdb, artist=artist)
    case = found[0] if found else None
    return LoopResult(before[0], before[1], lookback_id, done.total, case.id if case else None,
                      case.tier if case else None, case.artists if case else [])


def say(result: LoopResult, artist: str, index: Path, echo: Callable[[str], None]) -> None:
    """Prints what the loop did and where to look."""
    then = (f"{result.tier_before} for {', '.join(result.artists_before)}" if result.artists_before
            else "not flagged at either tier")
    echo(f"\nthe moderation loop: model {MODEL_ID} was scanned before {artist} registered ({then}); "
         f"{artist} registered, and the lookback re-screened {result.screened} recorded samples from "
         f"their stored vectors")
    if result.case_id is None:
        echo(f"  no case about {artist} was opened")
        return
    echo(f"  case #{result.case_id} (model {MODEL_ID}, tier {result.case_tier}) now names "
         f"{', '.join(result.case_artists)}. To look at it:")
    echo(f"  MIMICRY_ADMIN_TOKEN=demo-secret mimicry serve --index {index}")
    echo(f"  then sign in at http://127.0.0.1:8000/ with demo-secret and open /cases/{result.case_id}")
