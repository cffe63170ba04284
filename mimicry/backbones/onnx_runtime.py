"""ONNX Runtime under a backbone: the same weights and recipe, a faster CPU forward.

A runtime is how a backbone's forward pass runs, never what it computes: the
torch module is exported to an ONNX graph from the pinned weights and run with
ONNX Runtime's CPU provider, and the golden tests hold both runtimes to the
same vectors (within the golden tolerance). So the runtime is *not* part of
the recipe or the pin: an index built on one runtime is scanned on the other.

Promises:

- :func:`load` exports a module (:func:`exported`) once per ``key`` (weights
  sha256, recipe and :data:`EXPORT_RECIPE`) to ``<home>/onnx/<name>-<key>.onnx``, written
  atomically (a temporary file in the same folder, then ``os.replace``), so a
  kill at any moment leaves either no file or a whole one. The key is also
  stored inside the graph's metadata and checked on load: a file that does not
  match (or does not load) is exported again. Where the folder cannot be
  written, the graph is kept in memory for this process instead.
- :class:`OnnxModel` runs a graph on ``threads`` intra-op threads and returns
  numpy arrays; ``run`` may be called from several threads at once.

Export uses torch's TorchScript exporter (``dynamo=False``, opset 17): it needs
only the ``onnx`` package and takes about a second for the default trunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mimicry.errors import BackboneError

log = logging.getLogger(__name__)

#: Bump with any change to how graphs are exported (opset, exporter, names).
EXPORT_RECIPE = {"exporter": "torchscript", "opset": 17, "dynamic": "batch", "version": 1}
#: The metadata key in each exported graph that holds its cache key.
KEY_FIELD = "mimicry_key"
_IN_MEMORY: dict[str, bytes] = {}


def available() -> bool:
    """Whether ONNX Runtime and the exporter's ``onnx`` package import here."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def version_label() -> str:
    """``onnxruntime X.Y.Z`` (what a commit records as its runtime)."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def cache_key(parts: dict[str, Any]) -> str:
    """Short hash of what a graph is made of (weights, recipe, export recipe, ...)."""
    blob = json.dumps({**parts, "export": EXPORT_RECIPE}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Graph:
    """What to export: a module factory (built only when no cached graph
    exists), an example input and the input and output names."""

    name: str
    key: str
    build: Callable[[], Any]
    example: Any
    outputs: Sequence[str]
    input: str = "x"


def _export_bytes(graph: Graph) -> bytes:
    import io

    import onnx
    import torch

    module = graph.build().eval()
    buf = io.BytesIO()
    # The TorchScript exporter warns "Only steps=1 can be constant folded" (a
    # strided Slice in same-padding convs) and about tracing: harmless here,
    # the golden tests compare the outputs. Grad stays on: without it
    # nn.MultiheadAttention takes its fused path, which has no ONNX form.
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (graph.example,), buf, dynamo=False, opset_version=EXPORT_RECIPE["opset"],
            input_names=[graph.input], output_names=list(graph.outputs),
            dynamic_axes={graph.input: {0: "n"}, **{k: {0: "n"} for k in graph.outputs}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY_FIELD, graph.key
    return proto.SerializeToString()


def load(graph: Graph, home: Path, threads: int) -> OnnxModel:
    """``graph`` on ONNX Runtime: the cached file, loaded once and its key
    checked in that same session; a missing, damaged or foreign file is
    exported again (:func:`exported`)."""
    path = Path(home) / "onnx" / f"{graph.name}-{graph.key}.onnx"
    if path.is_file() and graph.key not in _IN_MEMORY:
        try:
            model = OnnxModel(str(path), graph.outputs, threads, graph.input)
        except BackboneError:  # a damaged file is simply not a match
            model = None
        if model is not None and model.key == graph.key:
            return model
    return OnnxModel(exported(graph, home), graph.outputs, threads, graph.input)


def exported(graph: Graph, home: Path) -> bytes | str:
    """The ONNX graph for ``graph``, exported now and written to the cache
    file (its path); its bytes when ``home`` is not writable (kept in memory
    for this process, exported once)."""
    folder = Path(home) / "onnx"
    path = folder / f"{graph.name}-{graph.key}.onnx"
    if graph.key in _IN_MEMORY:
        return _IN_MEMORY[graph.key]
    try:
        data = _export_bytes(graph)
    except Exception as exc:  # noqa: BLE001 - any exporter failure names the model
        raise BackboneError(f"{graph.name}: could not export to ONNX ({type(exc).__name__}: {exc}); "
                            f"use --runtime torch") from None
    try:
        from mimicry.store.durable import write_atomically  # an export only: a cached graph never loads it

        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, mode=0o644)  # a cache others (a service's user) may read
    except OSError as exc:
        log.info("%s: cannot write %s (%s); keeping the ONNX graph in memory", graph.name, folder, exc)
        _IN_MEMORY[graph.key] = data
        return data
    log.info("exported %s to %s", graph.name, path)
    return str(path)


class OnnxModel:
    """An exported graph on ONNX Runtime's CPU provider (``threads`` intra-op
    threads). :meth:`run` takes a float32 NCHW array and returns the outputs."""

    def __init__(self, model: bytes | str, outputs: Sequence[str], threads: int, input_name: str = "x") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting between runs: the spinning threads took the cores the
        # decoding threads need (an index ran 69 -> 80 img/s with it off, 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise BackboneError(f"ONNX Runtime could not load the exported graph ({exc}); "
                                f"use --runtime torch") from None
        self.outputs, self.input_name, self.threads = list(outputs), input_name, int(threads)
        self.key = self.session.get_modelmeta().custom_metadata_map.get(KEY_FIELD)  # the cache key it was made for

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
