"""Ingestion: a rebuild that loses a file between embedding it and recording
it says which file, changes nothing, and drops it only when told to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from mimicry import StyleIndex, ingestion
from mimicry.engines.local import LocalEngine
from mimicry.errors import InputError
from mimicry.store import Pin


class _Deleting:
    """A local engine that deletes ``victim`` right after each stretch is embedded."""

    name = "local"

    def __init__(self, embedder, victim: Path) -> None:
        self.inner, self.victim = LocalEngine(embedder), victim

    def embed(self, sources, **kwargs):
        for stretch in self.inner.embed(sources, **kwargs):
            self.victim.unlink(missing_ok=True)
            yield stretch


def _rewrite(path: Path, colour: tuple[int, int, int]) -> None:
    """Other bytes at ``path`` (so its hash no longer matches the index)."""
    Image.new("RGB", (64, 64), colour).save(path, format="PNG")


def test_a_file_gone_mid_rebuild_is_named_and_changes_nothing(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    victim = sorted((portfolio / "inkhatch-ivan").iterdir())[0]
    moved = replace(default_embedder.recipe, version=default_embedder.recipe.version + 1)
    _rewrite(victim, (200, 10, 10))
    with ix.store.writer() as w:
        pin = replace(Pin.for_embedder(default_embedder, w.pin.model_spec, w.pin.index_type),
                      recipe=moved.to_dict())
        with pytest.raises(InputError, match=f"rebuild stopped, 1 indexed file.*{victim.name}"):
            ingestion.rebuild(w, pin, _Deleting(default_embedder, victim))
    assert ix.info().works == 9 and ix.info().recipe == default_embedder.recipe.to_dict()

    _rewrite(victim, (10, 200, 10))
    with ix.store.writer() as w:
        report = ingestion.rebuild(w, pin, _Deleting(default_embedder, victim), drop_unreadable=True)
    assert (report.embedded, report.removed) == (8, 1)
    assert [s.path for s in report.skipped] == [str(victim)]
    assert str(victim) not in {x.path for x in StyleIndex.open(tmp_path / "ix", verify=False).works()}


def test_a_long_running_handle_commits_no_vectors_after_another_process_repins(tmp_path, portfolio,
                                                                              default_embedder):
    """A service opened the index and loaded its model; meanwhile ``mimicry
    index`` rebuilt the index under another recipe. The service's next upload,
    calibration and indexing must be refused, not commit old-recipe vectors
    into the re-pinned index."""
    import io

    from helpers import pin_older_recipe
    from mimicry.errors import PinMismatchError
    from mimicry.images import ImageBytes

    folder = tmp_path / "ix"
    StyleIndex.create(folder, embedder=default_embedder).add_folder(portfolio)
    service = StyleIndex.open(folder, embedder=default_embedder)  # the model is loaded and checked
    service.register_artist("newcomer")
    pin_older_recipe(folder)  # another process re-pinned the index: its recipe is not the service's
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 90)).save(buf, format="PNG")
    before = StyleIndex.open(folder, verify=False).vectors()[0].tolist()
    with pytest.raises(PinMismatchError):
        service.add_uploads("newcomer", [ImageBytes("new.png", buf.getvalue())])
    with pytest.raises(PinMismatchError):
        service.add_artist("newcomer", [portfolio / "inkhatch-ivan"])
    assert StyleIndex.open(folder, verify=False).vectors()[0].tolist() == before


def test_a_removal_that_drops_the_calibration_says_so(tmp_path, portfolio, default_embedder, caplog):
    """Uploads and removals return ids or nothing, so a calibration they drop
    (fewer than two artists left) is logged, never silently lost."""
    import logging
    import shutil

    for extra in sorted(portfolio.iterdir())[2:]:
        shutil.rmtree(extra)  # two artists
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    ix.calibrate()
    name = sorted(ix.artists())[0]
    works = ix.works(name)
    with caplog.at_level(logging.WARNING, logger="mimicry"):
        for w in works:
            ix.remove_work(name, w.id)
    assert any("calibration dropped" in r.getMessage() for r in caplog.records)
    assert ix.info().calibration == "uncalibrated"


def test_a_ray_engine_vouches_for_the_model_its_pin_names(tmp_path, portfolio, default_embedder):
    """The Ray engine's workers load the model of the pin it was made with; a
    writer expecting that model commits nothing after a re-pin to another recipe."""
    from dataclasses import asdict

    from helpers import pin_older_recipe
    from mimicry.engines.ray import RayEngine
    from mimicry.errors import PinMismatchError
    from mimicry.store import NewWork

    folder = tmp_path / "ix"
    ix = StyleIndex.create(folder, embedder=default_embedder)
    ix.add_folder(portfolio)
    engine = RayEngine(asdict(ix.store.read_pin()))  # made before the re-pin; Ray starts only to embed
    vector = ix.vectors()[1][0]
    with ix.store.writer(expect=engine.made_by) as w:  # the pin it names is still the index's
        w.commit([(NewWork("a", "/a/0.png", "0" * 64, 1, 1), vector)], [])
    pin_older_recipe(folder)
    with pytest.raises(PinMismatchError):
        with ix.store.writer(expect=engine.made_by) as w:
            w.commit([(NewWork("a", "/a/1.png", "1" * 64, 1, 1), vector)], [])
    assert "/a/1.png" not in {x.path for x in StyleIndex.open(folder, verify=False).works()}
