"""Embedding on a Ray cluster with Ray Data, for registries one machine cannot embed in time.

The pipeline is the local one spread out:

1. read and decode (Ray tasks): each file's bytes are read once, hashed, and
   decoded by :func:`mimicry.images.decode` with the recipe's draft size and
   the same limits; a file that fails becomes a row with its reason, never an
   exception;
2. ``map_batches`` with one embedder per actor (CPU, or one GPU each): the
   embedder's own preprocessing and forward pass;
3. vectors come back to the driver in input order, as
   :class:`~mimicry.engines.Embedded` stretches like the local engine's, and
   go to the index's commit loop (:func:`mimicry.ingestion.sync`) in atomic
   commits, as locally.

Each actor loads the pinned model and checks it gives the pinned recipe, so a
cluster with other weights fails instead of writing incomparable vectors.
Tasks are retried and actors restarted when a worker dies (``max_restarts``,
``max_task_retries``): Ray Data re-runs the lost batch, and because results
are collected in order by input position, a retried batch neither loses nor
duplicates a work.

The actor class is a parameter of :class:`RayEngine` (``actor``), so a test can
hand in a subclass that fails the way it wants to test.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Sequence

import numpy as np

from mimicry.backbones import runtime_label
from mimicry.engines import Embedded
from mimicry.errors import BackboneError, ImageError, InputError
from mimicry.images import ImageBytes

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.engines import ProgressFn
    from mimicry.images import ImageSource

#: How often a lost task or actor is retried before the run fails.
RETRIES = 3
#: CPU share a decode task asks for (two run beside each other on one free CPU).
DECODE_CPUS = 0.5


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError(f"--engine ray needs Ray Data: pip install 'mimicry[ray]' ({exc})") from None
    return ray


def start(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connects to the cluster at ``address`` (``auto``: the one this machine
    belongs to), or starts a local one with ``num_cpus``; returns ``ray``."""
    ray = _require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                  "include_dashboard": False}
        if address:
            kwargs["address"] = address
        elif num_cpus:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    return ray


def _decode_batch(batch: dict[str, np.ndarray], draft_size: int | None) -> dict[str, np.ndarray]:
    """Stage 1: bytes read once, hashed, decoded; failures kept as reasons."""
    from mimicry.errors import ImageError
    from mimicry.images import decode

    pixels, shas, errors = [], [], []
    for path in batch["path"]:
        try:
            d = decode(str(path), draft_size=draft_size)
            pixels.append(np.asarray(d.image, dtype=np.uint8))
            shas.append(d.sha256)
            errors.append("")
        except ImageError as exc:
            pixels.append(np.zeros((1, 1, 3), np.uint8))
            shas.append("")
            errors.append(exc.reason)
        except Exception as exc:  # noqa: BLE001 - any failure is that file's alone
            pixels.append(np.zeros((1, 1, 3), np.uint8))
            shas.append("")
            errors.append(f"could not be prepared ({type(exc).__name__}: {exc})")
    out = dict(batch)
    out["pixels"] = np.array(pixels + [None], dtype=object)[:-1]  # ragged: one array per image
    out["sha256"] = np.array(shas)
    out["error"] = np.array(errors)
    return out


class EmbedActor:
    """Stage 2: one embedder per actor (``threads`` torch threads), checked against the pin."""

    def __init__(self, model_spec: str, device: str, pin: dict[str, Any], threads: int = 1,
                 runtime: str | None = None) -> None:
        import torch

        from mimicry.backbones import load_embedder

        torch.set_num_threads(max(1, int(threads)))
        self.embedder = load_embedder(model_spec, device, runtime)
        got = (self.embedder.backbone_id, self.embedder.weights_sha256, self.embedder.recipe.to_dict())
        want = (pin["backbone_id"], pin["weights_sha256"], pin["recipe"])
        if got != want:
            raise BackboneError(f"a Ray worker's {model_spec} is {got[0]} (weights {got[1][:12]}…, recipe "
                                f"v{got[2].get('version')}), not the index's {want[0]} (weights "
                                f"{want[1][:12]}…, recipe v{want[2].get('version')})")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        from PIL import Image

        ok = [i for i, e in enumerate(batch["error"]) if not e]
        vectors = np.zeros((len(batch["path"]), self.embedder.dim), dtype=np.float32)
        if ok:
            tensors = [self.embedder.preprocess(Image.fromarray(np.asarray(batch["pixels"][i], np.uint8)))
                       for i in ok]
            vectors[ok] = self.embedder.embed_tensors(torch.stack(tensors))
        return {"position": batch["position"], "path": batch["path"], "sha256": batch["sha256"],
                "error": batch["error"], "vector": vectors, "worker": np.full(len(batch["path"]), os.getpid())}


class RayEngine:
    """Embeds files on a Ray cluster (module docstring) with the model ``pin``
    names (a :class:`~mimicry.store.Pin` as a dict), checked on every actor."""

    name = "ray"

    def __init__(self, pin: dict[str, Any], *, device: str = "cpu", address: str | None = None,
                 threads: int = 1, actors: int | None = None, num_cpus: int | None = None,
                 gpus_per_actor: float = 0.0, actor: type = EmbedActor,
                 stats: dict[int, int] | None = None, runtime: str | None = None) -> None:
        """``address``: the cluster (``auto``: the one this machine belongs to;
        None: start a local one with ``num_cpus``). ``actors`` embedding actors
        (None: one per free CPU, or per ``gpus_per_actor`` GPUs), each with
        ``threads`` torch threads. ``actor``: the actor class, called as
        :class:`EmbedActor` is. ``stats``, if given, receives images embedded
        per worker process. ``runtime`` runs the model on each actor (auto, torch, onnx)."""
        self.runtime = runtime
        self.pin, self.device, self.address, self.threads = pin, device, address, threads
        self.actors, self.num_cpus, self.gpus_per_actor = actors, num_cpus, gpus_per_actor
        self.actor, self.stats = actor, stats

    @property
    def made_by(self) -> Any:
        """The model whose vectors this engine yields (what a writer's ``expect``
        checks against the pin committed): the one its ``pin`` names."""
        from types import SimpleNamespace

        recipe = dict(self.pin["recipe"])
        return SimpleNamespace(backbone_id=self.pin["backbone_id"], weights_sha256=self.pin["weights_sha256"],
                               dim=int(self.pin["dim"]), recipe=SimpleNamespace(to_dict=lambda: dict(recipe)),
                               runtime=runtime_label(self.runtime, self.device))

    def embed(self, sources: Sequence[ImageSource], *, keys: Sequence[Hashable] | None = None,
              batch_size: int = 32, progress: ProgressFn | None = None,
              stage: str = "embedding") -> Iterator[Embedded]:
        """Embeds the files ``sources`` on Ray, yielding stretches in input
        order as the local engine does (:class:`~mimicry.engines.Engine`);
        uploads (:class:`~mimicry.images.ImageBytes`) are :class:`InputError`."""
        sources = list(sources)
        if any(isinstance(x, ImageBytes) for x in sources):
            raise InputError("--engine ray embeds files; uploads are embedded locally")
        keys = list(keys) if keys is not None else sources
        done = 0
        seen: set[int] = set()
        for batch in self._batches(sources, batch_size):
            stretch = _stretch(batch, keys, seen)
            if self.stats is not None:
                for pid in batch["worker"]:
                    self.stats[int(pid)] = self.stats.get(int(pid), 0) + 1
            done += len(stretch)
            if progress is not None:
                progress(stage, done, len(sources))
            yield stretch

    def _batches(self, sources: list, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """The pipeline's output batches, in input order (positions may repeat after a retry)."""
        if not sources:
            return
        ray = start(self.address, self.num_cpus)
        free = ray.available_resources()
        # One CPU (or GPU) per embedding actor, but never every CPU: the decode tasks
        # would starve. On a node too small for that, each actor asks for its share
        # of what decoding leaves.
        cpus = float(free.get("CPU", 1))
        gpus = self.gpus_per_actor
        n_actors = self.actors or (max(1, int(free.get("GPU", 0) // gpus)) if gpus
                                   else max(1, int(cpus - DECODE_CPUS)))
        actor_cpus = min(1.0, max(0.1, (cpus - DECODE_CPUS) / n_actors))
        ds = ray.data.from_items([{"position": i, "path": str(p)} for i, p in enumerate(sources)],
                                 override_num_blocks=max(1, min(len(sources) // max(1, batch_size), 4 * n_actors)))
        ds = ds.map_batches(_decode_batch, fn_kwargs={"draft_size": self.pin["recipe"].get("draft_size")},
                            batch_size=batch_size, batch_format="numpy", num_cpus=DECODE_CPUS,
                            max_retries=RETRIES)
        ds = ds.map_batches(self.actor, fn_constructor_kwargs={"model_spec": self.pin["model_spec"],
                                                               "device": self.device, "pin": self.pin,
                                                               "threads": self.threads,
                                                               "runtime": self.runtime},
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=actor_cpus,
                            num_gpus=gpus, max_restarts=RETRIES, max_task_retries=RETRIES)
        yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1)


def _stretch(batch: dict[str, np.ndarray], keys: Sequence[Hashable], seen: set[int]) -> Embedded:
    """One output batch as a stretch, inputs named by ``keys[position]``; a
    position already in ``seen`` (a retried batch delivered twice) is dropped."""
    out = Embedded([], np.zeros((0, len(batch["vector"][0])), np.float32), [], [])
    vecs: list[np.ndarray] = []
    for pos, path, sha, err, vec in zip(batch["position"], batch["path"], batch["sha256"], batch["error"],
                                        batch["vector"]):
        if int(pos) in seen:
            continue
        seen.add(int(pos))
        if err:
            out.failed.append((keys[int(pos)], ImageError(str(path), str(err))))
        else:
            out.keys.append(keys[int(pos)])
            vecs.append(np.asarray(vec, np.float32))
            out.sha256.append(str(sha))
    if vecs:
        out.vectors = np.stack(vecs)
    return out
