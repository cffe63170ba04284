"""Scoring: the default backbone attributes an imitation to the artist whose
style it copies; matches carry evidence as data."""

from __future__ import annotations

import numpy as np

from helpers import unit
from mimicry import StyleIndex
from mimicry.scoring import score
from mimicry.scanning import image_matches
from mimicry.store import Snapshot
from mimicry.synthetic import STYLES


def test_imitation_ranks_its_artist_first(tmp_path, default_embedder, demo_set):
    data = demo_set  # 4 artists x 6 works, 3 imitations of each
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(data.portfolios)
    results = ix.scan([data.imitations], top=len(STYLES))
    assert len(results) == 3 * len(STYLES)
    works = {w.id: w for w in ix.works()}
    for r in results:
        truth = data.truth[r.image.rsplit("/", 1)[-1]]
        assert r.matches[0].artist == truth, (r.image, r.matches[0])
        assert r.matches[0].evidence[0].similarity == r.matches[0].score
        assert r.sha256 and len(r.sha256) == 64
        # Scores are sorted, evidence per artist is the artist's own works, as data.
        assert [m.score for m in r.matches] == sorted((m.score for m in r.matches), reverse=True)
        for m in r.matches:
            for e in m.evidence:
                assert e.artist == m.artist == works[e.work_id].artist
                assert e.sha256 == works[e.work_id].sha256 and f"/{m.artist}/" in e.path
            assert [e.similarity for e in m.evidence] == sorted((e.similarity for e in m.evidence), reverse=True)


def test_scan_keeps_input_order_and_folders(tmp_path, default_embedder, portfolio, demo_set):
    data = demo_set
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    single = data.unrelated / "photo-01.png"
    results = ix.scan([single, data.imitations])
    assert results[0].image == str(single)
    assert len(results) == 1 + 3 * len(STYLES)
    assert [r.image for r in ix.scan(str(single))] == [str(single)]  # one path, not its letters


def test_scores_are_max_similarity_per_artist():
    rng = np.random.default_rng(0)
    vecs = unit(rng.normal(size=(7, 8)))
    artists = ["b", "a", "b", "c", "a", "a", "c"]
    snap = Snapshot.from_labelled(vecs, artists)
    q = unit(rng.normal(size=(3, 8)))
    got = score(snap, q)
    assert snap.artists == ("a", "b", "c")
    for j, name in enumerate(snap.artists):
        rows = [i for i, a in enumerate(artists) if a == name]
        assert np.allclose(got.raw[:, j], (q @ vecs[rows].T).max(axis=1))
    (matches, verdict, image_p), *_ = image_matches(snap, q[:1], top=2, evidence=2)
    assert verdict is None and image_p is None and len(matches) == 2  # uncalibrated: no flags, no verdict
    assert matches[0].flagged is None and matches[0].p_value is None
    assert [len(m.evidence) for m in matches] == [2, 2]


def test_neighbour_scoring_matches_every_artist_scored_exactly(monkeypatch):
    """2,000 artists: the ``need`` best artists from the nearest works (widened
    from a deliberately small first fetch) equal the dense exact scores, and
    no artist left out outscores them."""
    import mimicry.scoring as scoring

    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(2000, 32)))
    owner = rng.integers(0, 2000, 12_000)
    works = unit(centres[owner] + 0.15 * rng.normal(size=(12_000, 32)))
    snap = Snapshot.from_labelled(works, [f"artist-{a:04d}" for a in owner])
    queries = unit(centres[rng.integers(0, 2000, 50)] + 0.15 * rng.normal(size=(50, 32)))
    dense = score(snap, queries).raw
    monkeypatch.setattr(scoring, "NEIGHBOURS", 2)
    for need in (1, 3, 10):
        got = score(snap, queries, need=need)
        assert need == 1 or (got.neighbours > 2 * need).any()  # widened for some queries
        for i in range(len(queries)):
            best = np.argsort(-dense[i], kind="stable")[:need]
            np.testing.assert_allclose(got.raw[i, best], dense[i, best], rtol=0, atol=1e-5)
            left_out = ~np.isfinite(got.raw[i])
            assert not left_out[best].any()
            assert dense[i, left_out].max(initial=-np.inf) <= dense[i, best].min() + 1e-6


def test_neighbour_scoring_falls_back_to_every_work_past_its_cap(monkeypatch):
    import mimicry.scoring as scoring

    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(300, 16)))
    owner = rng.integers(0, 300, 3000)
    snap = Snapshot.from_labelled(unit(centres[owner] + 0.1 * rng.normal(size=(3000, 16))),
                                  [f"a{a:03d}" for a in owner])
    queries = unit(rng.normal(size=(10, 16)))
    monkeypatch.setattr(scoring, "NEIGHBOURS", 2)
    monkeypatch.setattr(scoring, "MAX_NEIGHBOURS", 4)
    got = score(snap, queries, need=50)
    assert (got.neighbours == 3000).all()
    np.testing.assert_allclose(got.raw, score(snap, queries).raw, atol=1e-6)


def test_the_same_upload_twice_gets_two_results(tmp_path, default_embedder, portfolio, demo_set):
    from mimicry.images import ImageBytes

    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    up = ImageBytes("blob", (demo_set.unrelated / "photo-00.png").read_bytes())
    first, second = ix.scan([up, up])
    assert first.to_dict() == second.to_dict() and first.image == "blob"


def test_evidence_shows_distinct_works_not_one_painting_stored_twice():
    from mimicry.scoring import nearest
    from mimicry.store.snapshot import Work

    def one(x) -> np.ndarray:
        return unit(np.asarray(x, dtype=np.float32)[None])[0]

    rng = np.random.default_rng(3)
    base = unit(rng.normal(size=(4, 16)))
    copy = one(base[0] + 1e-6 * rng.normal(size=16))  # the same painting re-encoded
    vecs = np.vstack([base[0], copy, base[1], base[2], base[3]])
    query = one(base[0] + 0.3 * base[1])
    shown = nearest(Snapshot.from_labelled(vecs, ["a"] * 5), query, 0, 3)
    assert len(shown) == 3 and 1 not in {e.work_id for e in shown} and shown[0].work_id == 0
    # The same file stored twice (one sha256) fills one slot, however it embeds.
    shas = ["1" * 64, "2" * 64, "1" * 64, "3" * 64, "4" * 64]
    works = {i: Work(i, "a", f"w{i}.png", shas[i], 0, 0, 0.0) for i in range(5)}
    snap = Snapshot.build(unit(rng.normal(size=(5, 16))), list(range(5)), works)
    got = nearest(snap, snap.vectors[0], 0, 5)
    assert len(got) == 4 and len({e.sha256 for e in got}) == 4
    # Two distinct works that happen to score alike are both shown.
    twins = np.vstack([one([1.0, 0, 1.0] + [0] * 13), one([1.0, 0, -1.0] + [0] * 13)])
    assert len(nearest(Snapshot.from_labelled(twins, ["a", "a"]), one([1.0] + [0] * 15), 0, 2)) == 2
