"""`make demo` runs the main job: its numbers must be the ones a user expects."""

from __future__ import annotations

import pytest

from mimicry.demo import run_demo


def test_demo_indexes_calibrates_flags_and_judges_models(demo, default_embedder):
    res, lines, out = demo
    assert res.top1 == 1.0 and res.flagged_right >= 0.75
    assert res.photos_flagged == 0
    assert res.fine_tune.artists == [res.fine_tuned_artist]
    assert res.fine_tune.findings[0].p_value < 1e-6
    assert res.unrelated_model.artists == []
    text = "\n".join(lines)
    assert f"imitates {res.fine_tuned_artist}" in text and "not flagged at either tier" in text


@pytest.mark.slow
def test_demo_reruns_in_place(tmp_path, default_embedder, monkeypatch):
    """A second run replaces the index instead of failing or doubling it (on a
    small copy: the generator is told to make fewer images)."""
    import mimicry.demo as demo_mod

    real = demo_mod.make_dataset
    monkeypatch.setattr(demo_mod, "make_dataset",
                        lambda out: real(out, works_per_artist=3, imitations_per_artist=1, unrelated=2))
    first = run_demo(tmp_path / "d", echo=lambda _: None, embedder=default_embedder)
    again = run_demo(tmp_path / "d", echo=lambda _: None, embedder=default_embedder)
    assert again.top1 == first.top1 and again.fine_tune.n_samples == first.fine_tune.n_samples
    from mimicry import StyleIndex

    with StyleIndex.open(tmp_path / "d" / "index") as ix:
        assert ix.info().works == 3 * 4


def test_demo_ends_with_its_own_wall_time(demo):
    import re

    _, lines, _ = demo
    assert re.fullmatch(r"demo took \d+\.\d s", lines[-1]), lines[-1]


def test_demo_shows_the_moderation_loop(demo):
    """The fine-tune is scanned and recorded before its artist registers; the
    lookback after the registration puts that artist on the model's case, and
    the demo says where to look."""
    from mimicry.moderation import cases
    from mimicry.moderation.db import ModerationDB

    res, lines, out = demo
    loop = res.loop
    assert loop is not None and loop.screened == res.fine_tune.n_samples
    assert res.fine_tuned_artist not in loop.artists_before  # not registered yet when scanned
    case = cases.get_case(ModerationDB(out / "index"), loop.case_id)
    assert res.fine_tuned_artist in case.artists and case.kind == "model" and case.key == "demo-model-1"
    assert case.tier in ("imitates", "review") and case.state == "open"
    text = "\n".join(lines)
    assert f"open /cases/{loop.case_id}" in text and "mimicry serve --index" in text
