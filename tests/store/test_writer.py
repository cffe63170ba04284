"""A writer that knows which model made its vectors refuses to write them into
an index re-pinned since; the storage modules' docstrings name what exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass

import numpy as np
import pytest

import mimicry.store
from helpers import unit
from mimicry.errors import PinMismatchError
from mimicry.store import Pin, Store
from mimicry.store.writer import NewWork

DIM = 8


@dataclass
class Recipe:
    version: int

    def to_dict(self) -> dict:
        return {"version": self.version}


@dataclass
class Model:
    """What a writer's ``expect`` needs of an embedder."""

    recipe: Recipe
    backbone_id: str = "test-model"
    weights_sha256: str = "0" * 64
    dim: int = DIM


def works(tag: str, n: int) -> list:
    vecs = unit(np.random.default_rng(len(tag)).normal(size=(n, DIM)))
    return [(NewWork("a", f"/{tag}/{i}.png", f"{tag}{i:063x}"[-64:], 1, 1), v) for i, v in enumerate(vecs)]


def test_a_writer_expecting_another_recipe_writes_no_vectors(tmp_path):
    folder = tmp_path / "ix"
    store = Store.create(folder, Pin("test-model", "test", "0" * 64, DIM, {"version": 1}))
    old = Model(Recipe(1))
    with store.writer(expect=old) as w:  # the pinned model and recipe: written
        w.commit(works("x", 6), [])
    # Another process re-pins the index to recipe 2 (a rebuild) while a service holds `old`.
    with Store.open(folder).writer() as w:
        snap = w.snapshot()
        w.replace_all(Pin("test-model", "test", "0" * 64, DIM, {"version": 2}), snap.work_ids.tolist(),
                      unit(np.random.default_rng(9).normal(size=(6, DIM))), [])
    before = store.snapshot()
    segments = sorted(p.name for p in (folder / "segments").iterdir())
    with store.writer(expect=old) as w:
        with pytest.raises(PinMismatchError, match="recipe"):
            w.commit(works("y", 3), [])
        with pytest.raises(PinMismatchError, match="recipe"):
            w.set_background(unit(np.ones((2, DIM))), np.arange(2))
        assert w.snapshot().revision == before.revision
    after = store.snapshot()
    assert after.revision == before.revision and after.background is None
    assert sorted(p.name for p in (folder / "segments").iterdir()) == segments  # not even a file
    with store.writer(expect=old) as w:  # removals write no vectors: still fine
        w.commit([], before.work_ids[:2].tolist())
    with store.writer(expect=Model(Recipe(2))) as w:  # the model the pin names now
        w.commit(works("z", 2), [])
        w.set_background(unit(np.ones((2, DIM))), np.arange(2))
    assert len(store.snapshot().work_ids) == 6 and store.snapshot().background is not None
    with pytest.raises(PinMismatchError, match="built with"):  # another model altogether
        with store.writer(expect=Model(Recipe(2), weights_sha256="1" * 64)) as w:
            w.commit(works("w", 1), [])


def _classes():
    for info in pkgutil.iter_modules(mimicry.store.__path__):
        module = importlib.import_module(f"mimicry.store.{info.name}")
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                yield module, cls


def _resolves(module, cls, name: str) -> bool:
    if "." not in name:
        return hasattr(cls, name)
    head, *rest = name.split(".")
    obj = getattr(module, head, None)
    if obj is None:
        for cut in range(len(name.split(".")) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(name.split(".")[:cut]))
                rest = name.split(".")[cut:]
                break
            except ImportError:
                continue
    for part in rest:
        obj = getattr(obj, part, None)
    return obj is not None


def test_docstrings_of_storage_classes_name_methods_that_exist():
    missing = []
    for module, cls in _classes():
        texts = [cls.__doc__ or ""] + [getattr(m, "__doc__", "") or "" for m in vars(cls).values()]
        for text in texts:
            for name in re.findall(r":meth:`~?([\w.]+)`", text):
                if not _resolves(module, cls, name):
                    missing.append(f"{module.__name__}.{cls.__name__}: {name}")
    assert not missing, missing
