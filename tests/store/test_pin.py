"""The pin: an index opens only with its own model and recipe; another recipe
gets the clear re-index error, and ``mimicry index`` on the same folders
rebuilds an index of an older recipe version (never a newer one)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mimicry import StyleIndex
from mimicry.errors import PinMismatchError
from mimicry.store import pin as pin_io


class OtherWeights:
    """Same id and dimension as the default, other weights: must not share an index."""

    backbone_id = "efficientnet-lite0"
    weights_sha256 = "0" * 64
    device = "cpu"

    def __init__(self, like) -> None:
        self.dim = like.dim
        self.recipe = like.recipe


class NewRecipe:
    """The default model with a recipe that moved (as a changed decode size would)."""

    def __init__(self, base) -> None:
        self.base = base
        self.backbone_id, self.weights_sha256, self.dim, self.device = (
            base.backbone_id, base.weights_sha256, base.dim, base.device)
        self.recipe = replace(base.recipe, version=base.recipe.version + 1, draft_size=448)

    def preprocess(self, image):
        return self.base.preprocess(image)

    def embed_tensors(self, batch):
        return self.base.embed_tensors(batch)


def test_wrong_weights_are_a_clear_error(tmp_path, portfolio, default_embedder):
    StyleIndex.create(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    with pytest.raises(PinMismatchError, match="built with efficientnet-lite0") as err:
        StyleIndex.open(tmp_path / "ix", embedder=OtherWeights(default_embedder))
    assert err.value.code == "pin_mismatch" and "Use the same model" in str(err.value)
    with pytest.raises(PinMismatchError):  # rebuilding never swaps the model
        StyleIndex.create(tmp_path / "ix", embedder=OtherWeights(default_embedder), rebuild=True)


def test_pin_records_the_recipe(tmp_path, portfolio, default_embedder):
    StyleIndex.create(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    on_disk = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert on_disk["recipe"] == default_embedder.recipe.to_dict()
    assert on_disk["recipe"]["draft_size"] == 224 and on_disk["schema_version"] == pin_io.SCHEMA_VERSION


def test_another_recipe_says_reindex_and_index_rebuilds(tmp_path, portfolio, default_embedder):
    StyleIndex.create(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    moved = NewRecipe(default_embedder)
    with pytest.raises(PinMismatchError, match="re-index") as err:
        StyleIndex.open(tmp_path / "ix", embedder=moved)
    assert "draft_size" in str(err.value) and "mimicry index" in str(err.value)
    ix = StyleIndex.create(tmp_path / "ix", embedder=moved, rebuild=True)
    report = ix.add_folder(portfolio)
    assert report.rebuilt and report.embedded == 0 and report.unchanged == 9
    assert ix.pin.recipe == moved.recipe.to_dict()
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["recipe"]["version"] == moved.recipe.version
    StyleIndex.open(tmp_path / "ix", embedder=moved)  # now it opens with the new recipe
    with pytest.raises(PinMismatchError):
        StyleIndex.open(tmp_path / "ix", embedder=default_embedder)


def test_rebuild_moves_forward_only_and_stops_on_unreadable_files(tmp_path, portfolio, default_embedder):
    from mimicry.errors import InputError

    StyleIndex.create(tmp_path / "ix", embedder=NewRecipe(default_embedder)).add_folder(portfolio)
    # The index is newer than this embedder's recipe: refused, never rebuilt backwards.
    with pytest.raises(PinMismatchError):
        StyleIndex.create(tmp_path / "ix", embedder=default_embedder, rebuild=True)
    pin = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert pin["recipe"]["version"] == default_embedder.recipe.version + 1

    # From an older recipe version forward: a file that cannot be read stops it, and nothing changes.
    StyleIndex.create(tmp_path / "old", embedder=default_embedder).add_folder(portfolio)
    moved = NewRecipe(default_embedder)
    gone = sorted((portfolio / "inkhatch-ivan").iterdir())[0]
    gone.unlink()
    with pytest.raises(InputError, match="rebuild stopped, 1 indexed file"):
        StyleIndex.create(tmp_path / "old", embedder=moved, rebuild=True)
    with pytest.raises(PinMismatchError, match="re-index"):  # nothing changed
        StyleIndex.open(tmp_path / "old", embedder=moved)
    ix = StyleIndex.create(tmp_path / "old", embedder=moved, rebuild=True, drop_unreadable=True)
    assert ix.info().works == 8 and ix.info().recipe == moved.recipe.to_dict()


def test_newer_schema_says_upgrade(tmp_path, portfolio, default_embedder):
    import sqlite3

    StyleIndex.create(tmp_path / "ix", embedder=default_embedder).add_folder(portfolio)
    db = sqlite3.connect(tmp_path / "ix" / "catalogue.sqlite")
    text = db.execute("SELECT value FROM meta WHERE key='pin'").fetchone()[0]
    db.execute("UPDATE meta SET value=? WHERE key='pin'",
               (text.replace(f'"schema_version": {pin_io.SCHEMA_VERSION}', '"schema_version": 99'),))
    db.commit()
    db.close()
    with pytest.raises(PinMismatchError, match="newer mimicry"):
        StyleIndex.open(tmp_path / "ix")
    with pytest.raises(PinMismatchError, match="newer mimicry"):
        StyleIndex.create(tmp_path / "ix", embedder=default_embedder, rebuild=True)
