"""`make demo` runs the main job: its numbers must be the ones a user expects."""

from __future__ import annotations

from mimicry.demo import run_demo


def test_demo_indexes_calibrates_flags_and_judges_models(tmp_path, default_embedder):
    lines: list[str] = []
    res = run_demo(tmp_path / "demo", echo=lines.append, embedder=default_embedder)
    assert res.top1 == 1.0 and res.flagged_right >= 0.75
    assert res.photos_flagged == 0
    assert res.fine_tune.artists == [res.fine_tuned_artist]
    assert res.fine_tune.findings[0].p_value < 1e-6
    assert res.unrelated_model.artists == []
    text = "\n".join(lines)
    assert f"imitates {res.fine_tuned_artist}" in text and "imitates no registered artist" in text
    # a second run replaces the index instead of failing or doubling it
    again = run_demo(tmp_path / "demo", echo=lambda _: None, embedder=default_embedder)
    assert again.top1 == res.top1 and again.fine_tune.n_samples == res.fine_tune.n_samples
