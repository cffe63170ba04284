"""Format changes go through numbered steps, run once, atomically, under the
write lock; an index no step reaches, older or newer, is refused with the
re-index or upgrade error and never changed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from helpers import unit
from mimicry.errors import PinMismatchError
from mimicry.store import Pin, Store, migrations
from mimicry.store import pin as pin_io
from mimicry.store.writer import NewWork

DIM = 8


def indexed(folder: Path) -> Store:
    store = Store.create(folder, Pin("test-model", "test", "0" * 64, DIM, {"version": 1}))
    vecs = unit(np.random.default_rng(0).normal(size=(5, DIM)))
    with store.writer() as w:
        w.commit([(NewWork("a", f"/a/{i}.png", f"{i:064x}", 1, 1), v) for i, v in enumerate(vecs)], [])
    return store


def meta(folder: Path, key: str) -> str | None:
    db = sqlite3.connect(folder / "catalogue.sqlite")
    try:
        row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def schema(folder: Path) -> int:
    return json.loads(meta(folder, "pin"))["schema_version"]


def test_every_schema_since_the_baseline_has_its_step():
    assert pin_io.SCHEMA_VERSION == migrations.BASELINE + len(migrations.STEPS)


def test_a_step_is_applied_once_atomically_under_the_write_lock(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    indexed(folder)
    calls = []

    def broken(cat) -> None:
        cat.set_meta("migrated", "half")
        raise RuntimeError("step failed")

    def step(cat) -> None:
        calls.append(1)
        cat.set_meta("migrated", "yes")

    now = pin_io.SCHEMA_VERSION
    monkeypatch.setattr(pin_io, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, migrations.Step(now, broken, "a test step")])
    with pytest.raises(PinMismatchError, match="next write"):  # readers never migrate
        Store.open(folder).snapshot()
    with pytest.raises(RuntimeError, match="step failed"):
        with Store.open(folder).writer():
            pass
    assert schema(folder) == now and meta(folder, "migrated") is None  # all or nothing
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS[:-1], migrations.Step(now, step, "a test step")])
    revision = int(meta(folder, "revision"))
    with Store.open(folder).writer() as w:
        assert w.pin.schema_version == now + 1
    assert calls == [1] and meta(folder, "migrated") == "yes" and schema(folder) == now + 1
    assert int(meta(folder, "revision")) == revision + 1
    assert json.loads((folder / "manifest.json").read_text())["schema_version"] == now + 1
    with Store.open(folder).writer():
        pass
    assert calls == [1]  # once
    assert len(Store.open(folder).snapshot().work_ids) == 5


def test_a_missing_step_is_the_reindex_error(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    indexed(folder)
    calls = []
    now = pin_io.SCHEMA_VERSION
    monkeypatch.setattr(pin_io, "SCHEMA_VERSION", now + 2)
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS,
                                              migrations.Step(now + 1, lambda cat: calls.append(1), "a gap")])
    for open_it in (lambda: Store.open(folder).snapshot(), lambda: Store.open(folder).writer().__enter__()):
        with pytest.raises(PinMismatchError, match="re-index") as err:
            open_it()
        assert f"mimicry index PORTFOLIOS --index {folder}" in str(err.value)
    assert calls == [] and schema(folder) == now


def test_a_schema_3_index_gains_the_runtime_column_on_its_next_write(tmp_path, monkeypatch):
    """A real step: works of a schema-3 index keep their rows and read as
    'runtime not recorded'; works added after it record theirs."""
    from types import SimpleNamespace

    folder = tmp_path / "ix"
    indexed(folder)
    db = sqlite3.connect(folder / "catalogue.sqlite")
    db.execute("ALTER TABLE works DROP COLUMN runtime")
    pin = json.loads(db.execute("SELECT value FROM meta WHERE key='pin'").fetchone()[0])
    db.execute("UPDATE meta SET value=? WHERE key='pin'", (json.dumps({**pin, "schema_version": 3}),))
    db.commit()
    db.close()
    with pytest.raises(PinMismatchError, match="next write"):
        Store.open(folder).snapshot()
    store = Store.open(folder)
    made_by = SimpleNamespace(backbone_id="test-model", weights_sha256="0" * 64, dim=DIM,
                              recipe=SimpleNamespace(to_dict=lambda: {"version": 1}), runtime="onnxruntime 9.9")
    with store.writer(expect=made_by) as w:
        w.commit([(NewWork("b", "/b/0.png", "f" * 64, 1, 1), unit(np.ones((1, DIM)))[0])], [])
    assert schema(folder) == pin_io.SCHEMA_VERSION
    snap = Store.open(folder).snapshot()
    runtimes = [snap.works[int(i)].runtime for i in snap.work_ids]
    assert runtimes == [None] * 5 + ["onnxruntime 9.9"]


def test_an_older_schema_says_reindex_a_newer_upgrade_and_neither_is_touched(tmp_path):
    folder = tmp_path / "ix"
    indexed(folder)
    files = sorted(p.name for p in (folder / "segments").iterdir())
    for version, message in ((2, "re-index"), (pin_io.SCHEMA_VERSION + 1, "upgrade mimicry")):
        db = sqlite3.connect(folder / "catalogue.sqlite")
        pin = json.loads(db.execute("SELECT value FROM meta WHERE key='pin'").fetchone()[0])
        db.execute("UPDATE meta SET value=? WHERE key='pin'", (json.dumps({**pin, "schema_version": version}),))
        db.commit()
        db.close()
        with pytest.raises(PinMismatchError, match=message):
            Store.open(folder).snapshot()
        with pytest.raises(PinMismatchError, match=message):
            with Store.open(folder).writer():
                pass
        assert schema(folder) == version and sorted(p.name for p in (folder / "segments").iterdir()) == files


def test_mimicry_index_runs_the_steps_and_readers_do_not(tmp_path, portfolio, default_embedder, monkeypatch):
    """``mimicry index`` (``StyleIndex.create``) is the write the re-index message
    names: it brings an index of an older schema forward before anything else;
    opening it to read never changes it."""
    from mimicry import StyleIndex

    folder = tmp_path / "ix"
    StyleIndex.create(folder, embedder=default_embedder).add_folder(portfolio)
    now = pin_io.SCHEMA_VERSION
    monkeypatch.setattr(pin_io, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, migrations.Step(
        now, lambda cat: cat.set_meta("migrated", "yes"), "a test step")])
    with pytest.raises(PinMismatchError, match="next write"):
        StyleIndex.open(folder)
    assert schema(folder) == now
    ix = StyleIndex.create(folder, embedder=default_embedder)
    assert schema(folder) == now + 1 and meta(folder, "migrated") == "yes"
    assert ix.info().works == 9 and StyleIndex.open(folder).info().schema_version == now + 1
