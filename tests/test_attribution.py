"""The default backbone attributes an imitation to the artist whose style it copies."""

from __future__ import annotations

from mimicry import StyleIndex
from mimicry.synthetic import make_dataset, STYLES


def test_imitation_ranks_its_artist_first(tmp_path, default_embedder):
    data = make_dataset(tmp_path, works_per_artist=4, imitations_per_artist=2, unrelated=0, seed=3)
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(data.portfolios)
    results = ix.scan([data.imitations], top=len(STYLES))
    assert len(results) == 2 * len(STYLES)
    for r in results:
        truth = data.truth[r.image.rsplit("/", 1)[-1]]
        assert r.matches[0].artist == truth, (r.image, r.matches[0])
        assert r.matches[0].evidence[0].similarity == r.matches[0].score
        # Scores are sorted, evidence per artist is the artist's own works.
        assert [m.score for m in r.matches] == sorted((m.score for m in r.matches), reverse=True)
        for m in r.matches:
            assert all(f"/{m.artist}/" in e.path for e in m.evidence)


def test_scan_keeps_input_order_and_folders(tmp_path, default_embedder):
    data = make_dataset(tmp_path, works_per_artist=2, imitations_per_artist=1, unrelated=2, seed=4)
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(data.portfolios)
    single = data.unrelated / "photo-01.png"
    results = ix.scan([single, data.imitations])
    assert results[0].image == str(single)
    assert len(results) == 1 + len(STYLES)
