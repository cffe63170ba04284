"""Runtimes: torch and ONNX Runtime give the same vectors; the exported graph is
cached by weights and recipe, rebuilt when it does not match, kept in memory
where mimicry's home cannot be written; every commit records its runtime."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from golden_vectors import TOLERANCE, check_golden
from helpers import golden_images
from mimicry.backbones import BackboneError, load_embedder, resolve_runtime, runtime_label
from mimicry.backbones import onnx_runtime
from mimicry.engines.local import embed_images
from mimicry.errors import InputError
from mimicry.settings import get_settings


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embedder("default", "cpu", "torch")


def test_auto_takes_onnx_runtime_on_the_cpu_and_torch_on_cuda(fresh_embedder):
    assert resolve_runtime("auto", "cpu") == "onnx"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("torch", "cpu") == "torch"
    assert fresh_embedder.runtime.startswith("onnxruntime ")  # the session's default model
    with pytest.raises(BackboneError, match="runs on the CPU"):
        resolve_runtime("onnx", "cuda")
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", "cpu")
    assert resolve_runtime(None, "cpu") == "onnx"  # MIMICRY_RUNTIME unset: auto
    with pytest.raises(InputError, match="MIMICRY_RUNTIME"):
        get_settings({"MIMICRY_RUNTIME": "fast"})
    assert get_settings({"MIMICRY_RUNTIME": "torch"}).runtime == "torch"


def test_both_runtimes_give_the_default_golden_vectors(fresh_embedder, torch_embedder):
    check_golden("efficientnet-lite0", fresh_embedder)
    check_golden("efficientnet-lite0", torch_embedder)
    a = embed_images(fresh_embedder, golden_images())
    b = embed_images(torch_embedder, golden_images())
    assert float(np.abs(a - b).max()) <= TOLERANCE
    assert float((a * b).sum(1).min()) > 0.99999


def test_the_graph_is_exported_once_and_rebuilt_when_it_does_not_match(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMICRY_HOME", str(tmp_path / "home"))
    calls = []
    real = onnx_runtime._export_bytes
    monkeypatch.setattr(onnx_runtime, "_export_bytes", lambda g: calls.append(g.key) or real(g))
    first = load_embedder("default", "cpu", "onnx")
    files = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert len(calls) == 1 and len(files) == 1
    assert [p.name for p in files[0].parent.iterdir()] == [files[0].name]  # no temporary left
    assert calls[0] in files[0].name  # keyed by weights and recipe
    load_embedder("default", "cpu", "onnx")
    assert len(calls) == 1  # reused
    # A damaged file, then a whole graph of another key under this name: each exported again.
    other = real(onnx_runtime.Graph("x", "another-key", _tiny_module, _example(), ["y"]))
    for damage in (b"not a graph", other):
        files[0].write_bytes(damage)
        check_golden("efficientnet-lite0", load_embedder("default", "cpu", "onnx"))
    assert calls == [calls[0]] * 3 and first.onnx is not None


def _tiny_module():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))


def _example():
    import torch

    return torch.zeros(2, 3, 8, 8)


def test_an_unwritable_cache_folder_keeps_the_graph_in_memory(tmp_path, monkeypatch):
    """The cache folder cannot be made (its place is taken by a file; file
    modes would not stop root): the graph stays in this process's memory."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "onnx").write_text("a file where the cache folder would be")
    monkeypatch.setenv("MIMICRY_HOME", str(home))
    monkeypatch.setattr(onnx_runtime, "_IN_MEMORY", {})
    emb = load_embedder("default", "cpu", "onnx")
    assert len(onnx_runtime._IN_MEMORY) == 1
    check_golden("efficientnet-lite0", emb)


def test_each_commit_records_its_runtime_and_info_lists_them(tmp_path, portfolio, fresh_embedder,
                                                              torch_embedder):
    from mimicry import StyleIndex
    from mimicry.faces.text import index_info

    ix = StyleIndex.create(tmp_path / "ix", embedder=torch_embedder)
    ix.add_folder(portfolio)
    artist = sorted(p for p in portfolio.iterdir())[0]
    (artist / "extra.png").write_bytes((artist / sorted(os.listdir(artist))[0]).read_bytes()[:-1] + b"\0")
    ix.close()
    ix = StyleIndex.open(tmp_path / "ix", embedder=fresh_embedder)
    ix.add_artist(artist.name, [artist / "extra.png"])
    info = ix.info()
    assert info.runtimes == {runtime_label("torch", "cpu"): 9, fresh_embedder.runtime: 1}
    assert info.background_runtime is None
    lines = "\n".join(index_info(json.loads(json.dumps(info.to_dict()))))
    assert f"{fresh_embedder.runtime} (1 works)" in lines and "torch " in lines
