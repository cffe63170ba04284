"""``StyleIndex``: the one Python API behind the CLI, the service and the report.

A facade: it opens an index and hands each job to the module that does it.
Storage is :mod:`mimicry.store`; embedding runs on an engine
(:mod:`mimicry.engines`); portfolios and calibration come in through
:mod:`mimicry.ingestion`; registered artists, their tokens and uploads are
:mod:`mimicry.registry`; scans and model verdicts are :mod:`mimicry.scanning`.

Promises:
- Reads (``scan``, ``scan_model``, ``info``, ``calibration``) never write and
  never take the write lock; they answer from the last committed snapshot, from
  any number of threads at once.
- Every write (``add_folder``, ``sync``, ``remove_artist``, ``calibrate``, the
  service's registrations and uploads) commits atomically; a write that changes
  the portfolio of a calibrated index recalibrates it (same target rate, stored
  background) before it returns.
- Vectors are only ever compared with vectors of the same pinned model and
  recipe: opening with another model, or scanning or writing after another
  process re-pinned the index, is :class:`~mimicry.errors.PinMismatchError`.
- Indexing is incremental and crash-safe (:mod:`mimicry.ingestion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.flagging import Calibration, calibration_of
from mimicry.results import IndexInfo, IndexReport, ModelVerdict, ScanResult
from mimicry.settings import Settings, check_rate, positive_or
from mimicry.store import Pin, Snapshot, Store, Work

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.engines import Engine, ProgressFn
    from mimicry.images import ImageBytes, ImageSource
    from mimicry.registry import Actor
    from mimicry.store.catalogue import AuditEntry

__all__ = ["IndexInfo", "StyleIndex"]


class StyleIndex:
    """A folder of artists' works embedded with one pinned model and recipe."""

    def __init__(self, store: Store, embedder: Embedder | None = None, device: str = "auto",
                 settings: Settings | None = None, runtime: str | None = None) -> None:
        self.store = store
        self.folder = store.folder
        self.settings = settings or store.settings
        self._embedder = embedder
        self._device = device
        self._runtime = runtime or self.settings.runtime  # what runs the model (auto, torch, onnx)
        self._rebuilt: IndexReport | None = None  # reported by the next sync

    # -- opening --------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, model: str = DEFAULT_MODEL, device: str = "auto",
               embedder: Embedder | None = None, rebuild: bool = False, drop_unreadable: bool = False,
               progress: ProgressFn | None = None, index_type: str | None = None,
               runtime: str | None = None) -> StyleIndex:
        """Creates an empty index at ``path`` pinned to ``model`` (or opens the
        one there, which must be pinned to the same model).

        ``index_type`` (``flat``, ``ivf``, ``hnsw`` or ``auto``, the default for
        a new index; :mod:`mimicry.store.ann`): how scans find nearest works.
        Given for an existing index, it is re-pinned and its approximate index
        built or dropped to match.

        An index there of an older recipe of the same model is :class:`PinMismatchError`
        (re-index) unless ``rebuild``: then every work is re-embedded the current way
        first (:meth:`rebuild`). Another model, or a newer index, is always refused.
        ``runtime`` (``auto``, ``torch``, ``onnx``; None: ``MIMICRY_RUNTIME``) runs the model."""
        from mimicry.opening import create_index

        return create_index(cls, path, model, (device, runtime), embedder, rebuild, drop_unreadable, progress,
                            index_type)

    @classmethod
    def open(cls, path: str | Path, device: str = "auto", model: str | None = None,
             embedder: Embedder | None = None, verify: bool = True, runtime: str | None = None) -> StyleIndex:
        """Opens an existing index. The model is built lazily from the pin (or
        from ``model``/``embedder``, which must match the pin exactly). With
        ``verify`` (the default) the committed state is read now, so an
        unreadable index fails here, not on first use; ``calibrate`` opens
        without it to rewrite an unreadable calibration. ``runtime`` as in :meth:`create`."""
        store = Store.open(Path(path))
        pin = store.read_pin()
        pin.check_current(store.folder)
        if embedder is None and model is not None:
            embedder = load_embedder(model, device, runtime)
        if embedder is not None:
            pin.check(embedder, store.folder)
        if verify:
            calibration_of(store.snapshot())
        return cls(store, embedder, device, runtime=runtime)

    def view(self, ann_in_background: bool = False) -> StyleIndex:
        """Another handle on this index (same folder, settings, device, and model
        once loaded) over a store of its own; this object is left as it is.
        With ``ann_in_background``, a write through the handle that makes the
        approximate index due returns at once and the index builds on a thread
        of its own (what the service wants: an upload never waits minutes)."""
        store = Store(self.folder, self.store.settings)
        store.ann_in_background = ann_in_background
        return StyleIndex(store, self._embedder, self._device, self.settings, self._runtime)

    @property
    def embedder(self) -> Embedder:
        """The pinned model, built on first use."""
        if self._embedder is None:
            pin = self.store.read_pin()
            emb = load_embedder(pin.model_spec, self._device, self._runtime)
            pin.check(emb, self.folder)
            self._embedder = emb
        return self._embedder

    @property
    def pin(self) -> Pin:
        return self.store.read_pin()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> StyleIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The last committed state (immutable; see :class:`mimicry.store.Snapshot`);
        a stored calibration that cannot be read is :class:`CorruptIndexError`."""
        snap = self.store.snapshot()
        calibration_of(snap)
        return snap

    def info(self) -> IndexInfo:
        """What the index is: pin, recipe, artists and works, calibration state,
        search, and the runtimes that made its vectors (:mod:`mimicry.index_info`)."""
        from mimicry.index_info import describe

        return describe(self.store, self.snapshot())

    def artists(self) -> list[str]:
        return list(self.snapshot().artists)

    def works(self, artist: str | None = None) -> list[Work]:
        snap = self.snapshot()
        return [snap.works[int(i)] for i in snap.work_ids
                if artist is None or snap.works[int(i)].artist == artist]

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(work ids, vectors) of everything indexed, as committed (read-only arrays)."""
        snap = self.snapshot()
        return snap.work_ids, snap.vectors

    @property
    def calibration(self) -> Calibration | None:
        """The stored calibration (check ``info().calibration`` for whether it is
        stale), or None if the index was never calibrated. Never recalibrates."""
        return calibration_of(self.snapshot())

    # -- embedding ------------------------------------------------------------
    def engine(self, engine: str | Engine = "local", address: str | None = None) -> Engine:
        """``engine`` itself, or the engine of that name (:func:`mimicry.engines.make_engine`)
        for this index's model: ``ray`` on the cluster at ``address``."""
        if not isinstance(engine, str):
            return engine
        from dataclasses import asdict
        from mimicry.engines import make_engine

        return make_engine(engine, lambda: self.embedder, lambda: asdict(self.store.read_pin()),
                           device=self._device if self._device != "auto" else "cpu", address=address,
                           ray_threads=self.settings.ray_threads, runtime=self._runtime)

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The model if it is loaded already (writers check the pin against it), else None."""
        return self._embedder

    def embedder_unchecked(self) -> Embedder:
        """The pinned model as it embeds today, whatever recipe the index is pinned to (for rebuilds)."""
        if self._embedder is None:
            self._embedder = load_embedder(self.store.read_pin().model_spec, self._device, self._runtime)
        return self._embedder

    def check_pin(self, snap: Snapshot) -> None:
        """The model in hand must still be the index's (another process may have re-pinned it)."""
        if snap.pin is not None:
            snap.pin.check(self.embedder, self.folder)

    # -- indexing portfolios ------------------------------------------------------
    def rebuild(self, progress: ProgressFn | None = None, drop_unreadable: bool = False,
                batch_size: int | None = None) -> IndexReport:
        """Re-embeds every work with this index's model as it embeds today and re-pins
        the index to that recipe, in one commit (:func:`mimicry.ingestion.rebuild`: an
        unreadable work stops it unless ``drop_unreadable``); nothing when already current."""
        from mimicry.ingestion import rebuild_index

        return rebuild_index(self, self.engine(), drop_unreadable=drop_unreadable, progress=progress,
                             batch_size=positive_or(batch_size, self.settings.batch_size, "batch_size"))

    def add_artist(self, name: str, paths: Sequence[str | Path], *, prune: bool = False,
                   batch_size: int | None = None, checkpoint: int | None = None,
                   progress: ProgressFn | None = None) -> IndexReport:
        """Adds (or updates) ``name``'s works from ``paths`` (files or folders).

        With ``prune``, works of ``name`` not among ``paths`` are removed.
        """
        return self.sync({name: [Path(p) for p in paths]}, prune=prune, batch_size=batch_size,
                         checkpoint=checkpoint, progress=progress)

    def add_folder(self, source: str | Path, *, batch_size: int | None = None,
                   checkpoint: int | None = None, progress: ProgressFn | None = None,
                   engine: str | Engine = "local", address: str | None = None) -> IndexReport:
        """Indexes a portfolio folder (one sub-folder per artist) or ``path,artist`` CSV.

        For each artist it contains, the index afterwards holds exactly that
        artist's readable files there: new and changed files are embedded, files
        that are gone are removed. Artists not in ``source`` are left alone.
        ``engine="ray"`` embeds on a Ray cluster (``address``; none: a local
        one), committing exactly as the local engine does; an
        :class:`~mimicry.engines.Engine` object is used as it is.
        """
        from mimicry.portfolio import read_portfolio

        portfolio = read_portfolio(source)
        report = self.sync(portfolio.works, prune=True, batch_size=batch_size,
                           checkpoint=checkpoint, progress=progress, engine=engine, address=address)
        report.skipped[:0] = portfolio.skipped
        return report

    def sync(self, works: dict[str, list[Path]], *, prune: bool = True, batch_size: int | None = None,
             checkpoint: int | None = None, progress: ProgressFn | None = None,
             engine: str | Engine = "local", address: str | None = None) -> IndexReport:
        """Brings the listed artists' works in line with ``works`` (see :meth:`add_folder`).
        ``progress(stage, done, total)`` is called as images are embedded."""
        from mimicry.ingestion import index_works

        s = self.settings
        report = index_works(self, works, prune=prune, engine=self.engine(engine, address), progress=progress,
                             batch_size=positive_or(batch_size, s.batch_size, "batch_size"),
                             checkpoint=positive_or(checkpoint, s.checkpoint, "checkpoint"))
        if self._rebuilt is not None and self._rebuilt.rebuilt:
            report.rebuilt = True
            report.warnings[:0] = self._rebuilt.warnings
            report.skipped[:0] = self._rebuilt.skipped
            self._rebuilt = None
        return report

    def calibrate(self, background: Sequence[ImageSource] | None = None, fpr: float | None = None,
                  batch_size: int | None = None, progress: ProgressFn | None = None) -> Calibration:
        """Computes and stores the calibration at image-level target rate ``fpr``
        (:mod:`mimicry.calibration`): at most about ``fpr`` of images like the
        background are flagged as anyone.

        Negatives: every other artist's works, plus ``background`` images
        (embedded once and kept in the index, so recalibration after a portfolio
        change reuses them). Without ``background`` the stored set, if any, is used.
        Returns the calibration; skipped background files are logged.
        """
        from mimicry.ingestion import calibrate_index

        return calibrate_index(self, background, check_rate("fpr", self.settings.fpr if fpr is None else fpr),
                               positive_or(batch_size, self.settings.batch_size, "batch_size"), progress)

    # -- registered artists: the service's writes, each one commit with its audit row ---
    def register_artist(self, name: str, actor: Actor | None = None, wait_s: float | None = None) -> str:
        """Registers ``name`` and returns their token, shown this once (:func:`mimicry.registry.register_artist`)."""
        return _registry().register_artist(self, name, actor, wait_s)

    def rotate_token(self, name: str, actor: Actor | None = None, wait_s: float | None = None) -> str:
        """A new token for ``name``; the old one stops working (:func:`mimicry.registry.rotate_token`)."""
        return _registry().rotate_token(self, name, actor, wait_s)

    def artist_token_matches(self, name: str, token: str) -> bool:
        """Whether ``token`` is ``name``'s, in constant time (:func:`mimicry.registry.artist_token_matches`)."""
        return _registry().artist_token_matches(self, name, token)

    def add_uploads(self, name: str, images: Sequence[ImageBytes], actor: Actor | None = None,
                    wait_s: float | None = None) -> list[int]:
        """Adds uploaded works to ``name``, all or none; their work ids (:func:`mimicry.registry.add_uploads`)."""
        return _registry().add_uploads(self, name, images, actor, wait_s)

    def remove_work(self, name: str, work_id: int, actor: Actor | None = None, wait_s: float | None = None) -> None:
        """Removes one of ``name``'s works (:func:`mimicry.registry.remove_work`)."""
        _registry().remove_work(self, name, work_id, actor, wait_s)

    def remove_artist(self, name: str, actor: Actor | None = None, wait_s: float | None = None) -> int:
        """Removes ``name`` and all their works; how many (:func:`mimicry.registry.remove_artist`)."""
        return _registry().remove_artist(self, name, actor, wait_s)

    def audit(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Recorded writes after id ``after``, oldest first (:func:`mimicry.registry.audit`)."""
        return _registry().audit(self, after, limit)

    # -- scanning (:mod:`mimicry.scanning`) -------------------------------------------
    def scan(self, images: Sequence[ImageSource], top: int | None = None, evidence: int | None = None,
             batch_size: int | None = None, progress: ProgressFn | None = None,
             engine: str | Engine = "local", address: str | None = None) -> list[ScanResult]:
        """Scores each image (files, folders of images, or :class:`~mimicry.images.ImageBytes`)
        against every artist.

        Returns one :class:`ScanResult` per input image, in input order; one
        that cannot be read gets ``error`` set and no matches. ``engine="ray"``
        embeds files on a Ray cluster (:meth:`iter_scan` streams the results).
        """
        return list(self.iter_scan(images, top, evidence, batch_size, progress, engine, address))

    def iter_scan(self, images: Sequence[ImageSource], top: int | None = None, evidence: int | None = None,
                  batch_size: int | None = None, progress: ProgressFn | None = None,
                  engine: str | Engine = "local", address: str | None = None) -> Iterator[ScanResult]:
        """:meth:`scan`, yielding each result in input order as soon as its stretch is embedded."""
        from mimicry.scanning import iter_scan

        s = self.settings
        yield from iter_scan(self, images, positive_or(top, s.top, "top"), positive_or(evidence, s.evidence, "evidence"),
                         positive_or(batch_size, s.batch_size, "batch_size"), progress, self.engine(engine, address))

    def scan_model(self, samples: Sequence[ImageSource], alpha: float | None = None,
                   batch_size: int | None = None, evidence: int | None = None,
                   progress: ProgressFn | None = None) -> ModelVerdict:
        """Model-level verdict on images sampled from one fine-tuned model.

        Needs a calibrated index (:class:`NotCalibratedError`). Each sample
        supports its best artist; per artist, the samples' image-level p-values
        are tested at several levels (:mod:`mimicry.model_test`); artists with p
        below ``alpha`` are the verdict. Findings list every artist with any
        evidence, by p-value, with the supporting samples paired with their nearest works.
        """
        from mimicry.scanning import scan_model

        s = self.settings
        return scan_model(self, samples, check_rate("alpha", s.alpha if alpha is None else alpha),
                          positive_or(batch_size, s.batch_size, "batch_size"),
                          positive_or(evidence, s.evidence, "evidence"), progress)


def _registry():  # noqa: ANN202 - the module
    """:mod:`mimicry.registry`, imported on first use (scans never need it)."""
    from mimicry import registry

    return registry
