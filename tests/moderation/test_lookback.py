"""Lookback: the history screened again for one artist from its stored vectors.
The fast path flags exactly what the full scan of every vector would; models
get the model test as a scan gives it; cases open (source lookback) with
their events, progress is kept, and a run that fails says why."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mimicry import ImageBytes, StyleIndex
from mimicry.errors import NotFoundError
from mimicry.moderation import cases, history, lookback, rescreen
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import HubIds
from mimicry.scanning import image_matches, judge_model


def _near(rng, centres: np.ndarray, n: int, noise: float) -> np.ndarray:
    v = centres[rng.integers(0, len(centres), n)] + rng.normal(0, noise / np.sqrt(centres.shape[1]),
                                                                (n, centres.shape[1]))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def snap(demo, default_embedder):
    _, _, out = demo
    return StyleIndex.open(out / "index", embedder=default_embedder).snapshot()


@pytest.fixture(scope="module")
def queries(snap) -> np.ndarray:
    """Synthetic uploads: near each artist's works (close and loose), near the
    background, and random directions."""
    rng = np.random.default_rng(0)
    parts = [_near(rng, snap.rows(c), 60, noise) for c in snap.columns for noise in (0.3, 0.7, 1.2)]
    parts += [_near(rng, snap.background, 200, 0.5), _near(rng, rng.normal(size=(5, snap.dim)), 40, 0.1)]
    return np.concatenate(parts)


def test_the_fast_path_flags_exactly_what_the_full_scan_would(snap, queries):
    full = [artist for _, artist, _ in image_matches(snap, queries, 1, 1)]
    candidates = 0
    for j, artist in enumerate(snap.artists):
        fast = rescreen.screen_images(snap, queries, artist)
        assert fast.tolist() == [a == artist for a in full]
        bound = rescreen.Bound.of(snap, j)
        candidates += int(bound.passes(queries).sum())
        assert fast.sum() > 0  # every artist has images flagged as them here
    flagged = sum(a is not None for a in full)
    assert flagged < candidates < len(queries) * len(snap.artists) / 2  # the bound is not trivial, and prunes


def test_nothing_is_flagged_as_an_unknown_or_uncovered_artist(snap, queries):
    assert not rescreen.screen_images(snap, queries, "nobody").any()
    assert rescreen.Bound.of(snap, len(snap.artists) + 5) is None
    assert rescreen.screen_images(snap, queries[:0], snap.artists[0]).shape == (0,)


def test_model_tiers_are_the_scans_model_verdicts(snap):
    rng = np.random.default_rng(1)
    sets = [_near(rng, snap.rows(snap.columns[j % len(snap.columns)]), 12, 0.6) for j in range(4)]
    sets += [_near(rng, snap.background, 12, 0.5), np.zeros((0, snap.dim), np.float32)]
    got = rescreen.model_tiers(snap, sets, rescreen.ModelTest())
    for vecs, tier in zip(sets[:-1], got[:-1]):
        verdict = judge_model(snap, vecs, [f"s{i}" for i in range(len(vecs))], 0.001)
        assert tier == history.model_tier(verdict)
    assert got[-1] == ("none", []) and any(t != "none" for t, _ in got)


def _scan(ix: StyleIndex, paths) -> tuple[list, list[bytes]]:
    uploads = [p.read_bytes() for p in paths]
    return ix.scan([ImageBytes(p.name, b) for p, b in zip(paths, uploads)]), uploads


@pytest.fixture
def before_registration(calibrated_copy, demo, default_embedder):
    """The demo index without its fine-tuned artist; the history: that
    artist's imitations one upload each, a photo, and the fine-tune's samples
    as a model, all scanned while the artist was not registered; then the
    artist registers again. (index, moderation db, artist, upload ids)."""
    result, _, out = demo
    artist = result.fine_tuned_artist
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    works = sorted((out / "portfolios" / artist).glob("*.png"))
    ix.remove_artist(artist)
    mdb = ModerationDB(calibrated_copy)
    imitations = sorted((out / "imitations").glob(f"imitation-of-{artist}-*.png"))
    ids = []
    for i, path in enumerate(imitations + sorted((out / "unrelated").glob("*.png"))[:1]):
        results, uploads = _scan(ix, [path])
        assert results[0].artist != artist
        history.record_images(mdb, results, uploads, HubIds(f"up-{i}", None, "someone"), preview_side=32)
        ids.append(f"up-{i}")
    samples = sorted((out / "samples-fine-tune").glob("*.png"))
    verdict = ix.scan_model(samples)
    history.record_model(mdb, verdict, [p.read_bytes() for p in samples], HubIds(None, "model-1", "maker"),
                         preview_side=32)
    ix.add_artist(artist, works)  # recalibrates: the artist is covered again
    return ix, mdb, artist, ids


def _events(mdb, type_):
    return [json.loads(d) for t, d in mdb.read("SELECT type, data FROM events ORDER BY rowid") if t == type_]


def test_a_registration_joins_the_cases_of_what_it_finds(before_registration):
    """Imitations scanned while their artist was away were flagged as another
    artist: lookback adds the artist to those cases (none opened)."""
    ix, mdb, artist, ids = before_registration
    lb = lookback.run(mdb, ix.snapshot(), lookback.begin(mdb, artist))
    assert (lb.state, lb.error, lb.done) == ("finished", None, lb.total) and lb.total > len(ids)
    about, _ = cases.list_cases(mdb, artist=artist)
    assert lb.opened == sum(c.source == "lookback" for c in about)
    assert any(c.kind == "model" and c.key == "model-1" for c in about)
    # exactly the uploads a scan now flags as the artist
    rows = mdb.read("SELECT s.upload_id, i.vector FROM scan_images i JOIN scans s ON s.id = i.scan_id "
                    "WHERE s.kind = 'image'")
    now = image_matches(ix.snapshot(), np.stack([np.frombuffer(v, np.float32) for _, v in rows]), 1, 1)
    flagged_now = {u for (u, _), m in zip(rows, now) if m[1] == artist}
    assert flagged_now and {c.key for c in about if c.kind == "upload"} == flagged_now
    assert ids[-1] not in flagged_now  # the photo
    assert _events(mdb, "lookback.finished") == [{"lookback": lb.id, "artist": artist, "state": "finished",
                                                  "done": lb.total, "total": lb.total, "opened": lb.opened,
                                                  "error": None}]


def _insert(mdb: ModerationDB, vecs: np.ndarray, at: float) -> None:
    with mdb.transaction() as db:
        for i, v in enumerate(vecs):
            sid = db.execute("INSERT INTO scans(at, kind, upload_id, uploader, tier, result) "
                             "VALUES(?, 'image', ?, 'u', 'not-flagged', '{}')", (at, f"syn-{i}")).lastrowid
            db.execute("INSERT INTO scan_images(scan_id, position, sha256, name, vector, tier) "
                       "VALUES(?, 0, ?, 'x', ?, 'not-flagged')", (sid, f"{i:064x}", v.tobytes()))


def test_new_matches_open_cases_with_source_lookback(calibrated_copy, default_embedder):
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    snap = ix.snapshot()
    artist = snap.artists[1]
    rng = np.random.default_rng(2)
    vecs = np.concatenate([_near(rng, snap.rows(snap.columns[1]), 30, 0.4), _near(rng, snap.background, 30, 0.5)])
    mdb = ModerationDB(calibrated_copy)
    _insert(mdb, vecs, time.time())
    lb = lookback.run(mdb, snap, lookback.begin(mdb, artist))
    opened, _ = cases.list_cases(mdb, artist=artist)
    expected = {f"syn-{i}" for i, m in enumerate(image_matches(snap, vecs, 1, 1)) if m[1] == artist}
    assert lb.opened == len(opened) == len(expected) > 10
    assert {c.key for c in opened} == expected
    assert all((c.source, c.tier, c.artists) == ("lookback", "flagged", [artist]) for c in opened)
    assert [e["source"] for e in _events(mdb, "case.opened")] == ["lookback"] * lb.opened
    # again: the cases are joined, none opened; a decided case is never reopened
    cases.decide(mdb, opened[0].id, "dismiss", "", "mod")
    again = lookback.run(mdb, snap, lookback.begin(mdb, artist))
    assert again.opened == 0 and cases.get_case(mdb, opened[0].id).state == "dismissed"
    # from before the pin (another model's vectors): not screened
    with mdb.transaction() as db:
        db.execute("DELETE FROM cases")
        db.execute("UPDATE scans SET at = ?", (snap.pin.created_at - 1,))
    old = lookback.run(mdb, snap, lookback.begin(mdb, artist))
    assert (old.state, old.opened, old.done) == ("finished", 0, old.total)


def test_start_runs_on_a_thread_and_progress_is_read_back(before_registration):
    ix, mdb, artist, _ = before_registration
    first, thread = lookback.start(mdb, ix, artist)
    second, thread2 = lookback.start(mdb, ix, "nobody-registered")
    thread.join(60)
    thread2.join(60)
    assert lookback.get(mdb, first).state == "finished" and lookback.get(mdb, first).done > 0
    nobody = lookback.get(mdb, second)
    assert (nobody.state, nobody.opened, nobody.done) == ("finished", 0, nobody.total)
    page, nxt = lookback.listed(mdb, limit=1)
    assert [lb.id for lb in page] == [first] and nxt == first
    assert [lb.id for lb in lookback.listed(mdb, after=nxt)[0]] == [second]
    assert [lb.id for lb in lookback.listed(mdb, artist=artist)[0]] == [first]
    with pytest.raises(NotFoundError, match="no lookback 999"):
        lookback.get(mdb, 999)


def test_a_failed_run_says_why_and_still_announces_its_end(before_registration, monkeypatch):
    ix, mdb, artist, _ = before_registration

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lookback, "screen_images", broken)
    lb = lookback.run(mdb, ix.snapshot(), lookback.begin(mdb, artist))
    assert lb.state == "failed" and "disk on fire" in lb.error and lb.finished_at is not None
    assert _events(mdb, "lookback.finished")[-1]["state"] == "failed"


def test_lookbacks_a_stopped_process_left_are_marked_interrupted(tmp_path):
    mdb = ModerationDB(tmp_path)
    queued = lookback.begin(mdb, "ann")
    with mdb.transaction() as db:  # queued by a process that has stopped (its owner file gone)
        db.execute("UPDATE lookbacks SET owner='0123abcd' WHERE id=?", (queued,))
    assert lookback.interrupted(mdb) == ["ann"]
    lb = lookback.get(mdb, queued)
    assert lb.state == "failed" and lb.error.startswith("interrupted")
    assert lookback.interrupted(mdb) == []


def test_an_expired_scan_opens_nothing(before_registration):
    ix, mdb, artist, _ = before_registration
    history.expire(mdb, 0, now=time.time() + 10)
    lb = lookback.run(mdb, ix.snapshot(), lookback.begin(mdb, artist))
    assert (lb.state, lb.total, lb.opened) == ("finished", 0, 0)


def test_a_lookbacks_case_shows_the_lookbacks_verdict(before_registration):
    """The case points at a scan recording the lookback's verdict: the same
    hub ids, time and images, the result re-judged now (the new artist
    flagged, with their nearest works), marked as the lookback's; the case
    page says so. Re-judged copies are not screened again."""
    from mimicry.faces.web.evidence import case_view
    from mimicry.moderation.evidence import case_evidence, for_artist

    ix, mdb, artist, _ = before_registration
    snap = ix.snapshot()
    lb = lookback.run(mdb, snap, lookback.begin(mdb, artist))
    about, _ = cases.list_cases(mdb, artist=artist)
    upload = next(c for c in about if c.kind == "upload")
    ev = case_evidence(mdb, upload.id)
    (old,) = mdb.read("SELECT at, upload_id, uploader FROM scans WHERE upload_id=? AND id<>?",
                      (upload.key, ev.scan_id))
    assert (ev.at, ev.upload_id, ev.uploader, ev.request_id, ev.tier) == (*old, None, "flagged")
    assert ev.result["lookback"]["id"] == lb.id and ev.result["lookback"]["artist"] == artist
    (r,) = ev.result["results"]
    assert r["artist"] == artist and r["matches"][0]["artist"] == artist and r["matches"][0]["flagged"]
    assert r["matches"][0]["evidence"] and all(e["artist"] == artist for e in r["matches"][0]["evidence"])
    assert [(i.tier, i.artist) for i in ev.images] == [("flagged", artist)] and ev.images[0].preview
    vecs = mdb.read("SELECT vector FROM scan_images WHERE sha256=?", (ev.images[0].sha256,))
    assert len(vecs) == 2 and vecs[0] == vecs[1]
    assert for_artist(ev).result["results"][0]["artist"] == artist
    view = case_view(ev, snap.works)
    assert view.headline == f"Flagged as {', '.join(upload.artists)}" and view.rows[0].kind == "flagged"
    assert f"Re-screened by a lookback for {artist} on" in view.sentence and artist in view.rows[0].words
    assert view.rows[0].works and all(w.url and artist in w.alt for w in view.rows[0].works)
    model = next(c for c in about if c.kind == "model")
    mev = case_evidence(mdb, model.id)
    assert mev.kind == "model" and artist in mev.result["artists"] + mev.result["review"]
    assert mev.result["lookback"]["id"] == lb.id and len(mev.images) == mev.result["n_samples"]
    assert any(i.tier == "supports" for i in mev.images)
    assert artist in case_view(mev, snap.works).headline
    # a second run screens the recorded scans only, and adds one copy per case
    scans = mdb.read("SELECT count(*) FROM scans")[0][0]
    again = lookback.run(mdb, snap, lookback.begin(mdb, artist))
    assert again.total == lb.total and again.opened == 0
    assert mdb.read("SELECT count(*) FROM scans")[0][0] == scans + len(about)
