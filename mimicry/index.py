"""``StyleIndex``: the one Python API behind the CLI, the service and the report.

It ties the steps together and holds no logic of its own: storage
(:mod:`mimicry.store`), embedding (:mod:`mimicry.embedding`), scoring
(:mod:`mimicry.scoring`), calibration (:mod:`mimicry.calibration`) and verdicts
(:mod:`mimicry.verdict`).

Promises:
- Reads (``scan``, ``scan_model``, ``info``, ``calibration``) never write and
  never take the write lock; they answer from the last committed snapshot, from
  any number of threads at once.
- Every write (``add_folder``, ``sync``, ``remove_artist``, ``calibrate``)
  commits atomically; a write that changes the portfolio of a calibrated index
  recalibrates it (same target rate, stored background) before it returns.
- Indexing is incremental and crash-safe (:mod:`mimicry.ingestion`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.calibration import (
    Calibration,
    calibrate_snapshot,
    calibration_of,
    calibration_state,
    state_warnings,
)
from mimicry.errors import (
    ConflictError,
    InputError,
    NotCalibratedError,
    NotFoundError,
    PinMismatchError,
)
from mimicry.images import ImageBytes, ImageSource, expand_inputs, source_name
from mimicry.registry import CLI, Actor, check_name, new_token, store_upload, token_matches
from mimicry.portfolio import background_groups, read_portfolio
from mimicry.results import IndexInfo, IndexReport, ModelVerdict, ScanResult
from mimicry.settings import Settings, check_positive, check_rate
from mimicry.store import Pin, Snapshot, Store, Work, Writer
from mimicry.store.catalogue import AuditEntry
from mimicry import ingestion

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.embedding import ProgressFn
    from mimicry.engines import Engine

log = logging.getLogger(__name__)

#: Kept for code written against earlier releases: the pin error.
IndexMismatchError = PinMismatchError

__all__ = ["IndexInfo", "IndexMismatchError", "StyleIndex"]


class StyleIndex:
    """A folder of artists' works embedded with one pinned model and recipe."""

    def __init__(self, store: Store, embedder: Embedder | None = None, device: str = "auto",
                 settings: Settings | None = None) -> None:
        self.store = store
        self.folder = store.folder
        self.settings = settings or store.settings
        self._embedder = embedder
        self._device = device
        self._rebuilt: IndexReport | None = None  # reported by the next sync

    # -- opening --------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        embedder: Embedder | None = None,
        rebuild: bool = False,
        drop_unreadable: bool = False,
        progress: ProgressFn | None = None,
        index_type: str | None = None,
    ) -> StyleIndex:
        """Creates an empty index at ``path`` pinned to ``model`` (or opens the
        one there, which must be pinned to the same model).

        ``index_type`` (``flat``, ``ivf``, ``hnsw`` or ``auto``, the default for
        a new index; :mod:`mimicry.store.ann`): how scans find nearest works.
        Given for an existing index, it is re-pinned and its approximate index
        built or dropped to match.

        An index there built by an older mimicry (before recipes were pinned, or
        with an older recipe version of the same model) is :class:`PinMismatchError`
        (re-index), unless ``rebuild``: then every work is re-embedded the current
        way first (:meth:`rebuild`). Another model, or a newer index, is always refused.
        """
        from mimicry.store.ann import AUTO, check_kind

        folder = Path(path)
        if index_type is not None:
            check_kind(index_type)
        if Store.exists(folder):
            store = Store.open(folder)
            pin = store.read_pin()
            emb = embedder or load_embedder(model if model != DEFAULT_MODEL else pin.model_spec, device)
        else:
            emb = embedder or load_embedder(model, device)
            store = Store.create(folder, Pin.for_embedder(emb, model, index_type or AUTO))
            pin = store.read_pin()  # another creator may have pinned it first
        if index_type is not None and pin.index_type != index_type and pin.same_model(emb):
            with store.writer() as w:
                w.set_index_type(index_type)
        try:
            pin.check(emb, folder)
        except PinMismatchError:
            if not (rebuild and pin.upgradable_to(emb)):
                raise
            ix = cls(store, emb, device)
            ix._rebuilt = ix.rebuild(progress=progress, drop_unreadable=drop_unreadable)
            return ix
        return cls(store, emb, device)

    @classmethod
    def open(
        cls,
        path: str | Path,
        device: str = "auto",
        model: str | None = None,
        embedder: Embedder | None = None,
        verify: bool = True,
    ) -> StyleIndex:
        """Opens an existing index. The model is built lazily from the pin (or
        from ``model``/``embedder``, which must match the pin exactly). With
        ``verify`` (the default) the committed state is read now, so an
        unreadable index fails here, not on first use; ``calibrate`` opens
        without it to rewrite an unreadable calibration."""
        store = Store.open(Path(path))
        pin = store.read_pin()
        pin.check_current(store.folder)
        if embedder is None and model is not None:
            embedder = load_embedder(model, device)
        if embedder is not None:
            pin.check(embedder, store.folder)
        if verify:
            calibration_of(store.snapshot())
        return cls(store, embedder, device)

    def view(self, ann_in_background: bool = False) -> StyleIndex:
        """Another handle on this index (same folder, settings, device, and model
        once loaded) over a store of its own; this object is left as it is.
        With ``ann_in_background``, a write through the handle that makes the
        approximate index due returns at once and the index builds on a thread
        of its own (what the service wants: an upload never waits minutes)."""
        store = Store(self.folder, self.store.settings)
        store.ann_in_background = ann_in_background
        return StyleIndex(store, self._embedder, self._device, self.settings)

    @property
    def embedder(self) -> Embedder:
        """The pinned model, built on first use."""
        if self._embedder is None:
            pin = self.store.read_pin()
            emb = load_embedder(pin.model_spec, self._device)
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
        snap = self.snapshot()
        pin = snap.pin
        assert pin is not None
        counts = dict(snap.artist_counts)
        cal = calibration_of(snap)
        return IndexInfo(
            str(self.folder), pin.backbone_id, pin.model_spec, pin.weights_sha256, dict(pin.recipe),
            pin.dim, pin.schema_version, pin.package_version, counts, len(snap.work_ids),
            snap.generation, calibration_state(snap), None if cal is None else cal.target_rate,
            0 if cal is None else cal.n_background, None if cal is None else cal.promise(),
            state_warnings(snap), (cal.calibrated_at or None) if cal is not None else None,
            {"type": pin.index_type, "in_use": snap.ann.info.type if snap.ann is not None else "flat",
             "infos": snap.ann.info.to_dict() if snap.ann is not None else None},
        )

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

    # -- writing --------------------------------------------------------------
    def _engine(self, engine: str | Engine = "local", address: str | None = None) -> Engine:
        """``engine`` itself, or the engine of that name (:func:`mimicry.engines.make_engine`)
        for this index's model: ``ray`` on the cluster at ``address``."""
        if not isinstance(engine, str):
            return engine
        from dataclasses import asdict

        from mimicry.engines import make_engine

        return make_engine(engine, lambda: self.embedder, lambda: asdict(self.store.read_pin()),
                           device=self._device if self._device != "auto" else "cpu", address=address,
                           ray_threads=self.settings.ray_threads)

    def rebuild(self, progress: ProgressFn | None = None, drop_unreadable: bool = False,
                batch_size: int | None = None) -> IndexReport:
        """Re-embeds every work from its file with this index's model as it
        embeds today, and re-pins the index to that recipe, in one commit (see
        :func:`mimicry.ingestion.rebuild`; a work that cannot be read stops it
        unless ``drop_unreadable``). Needs the pinned model's weights. Does
        nothing when the index is already current."""
        emb = self._embedder or load_embedder(self.store.read_pin().model_spec, self._device)
        self._embedder = emb
        with self.store.writer() as w:
            if not w.pin.same_model(emb):
                raise PinMismatchError(f"{self.folder}: rebuild needs the pinned model {w.pin.backbone_id}")
            if w.pin.current and w.pin.recipe == emb.recipe.to_dict():
                return IndexReport()  # another process rebuilt it meanwhile
            log.warning("%s: re-embedding every work with recipe v%s", self.folder, emb.recipe.version)
            report = ingestion.rebuild(w, Pin.for_embedder(emb, w.pin.model_spec, w.pin.index_type),
                                        self._engine(), drop_unreadable=drop_unreadable, progress=progress,
                                        batch_size=_count(batch_size, self.settings.batch_size, "batch_size"))
        for line in report.warnings + [f"{s.path}: {s.reason}" for s in report.skipped]:
            log.warning("rebuild: %s", line)
        return report

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
        s = self.settings
        eng = self._engine(engine, address)
        with self.store.writer(expect=self._embedder) as w:
            report = ingestion.sync(w, works, eng, prune=prune,
                                     checkpoint=_count(checkpoint, s.checkpoint, "checkpoint"),
                                     batch_size=_count(batch_size, s.batch_size, "batch_size"), progress=progress)
            report.warnings += self._refresh_calibration(w)
            if report.embedded or report.removed:
                w.record(CLI.kind, None, "index", ",".join(sorted(works))[:1000],
                         detail=f"embedded {report.embedded}, removed {report.removed}")
        if self._rebuilt is not None and self._rebuilt.rebuilt:
            report.rebuilt = True
            report.warnings[:0] = self._rebuilt.warnings
            report.skipped[:0] = self._rebuilt.skipped
            self._rebuilt = None
        return report

    def remove_artist(self, name: str, actor: Actor = CLI, wait_s: float | None = None) -> int:
        """Removes ``name`` and all their vectors (and uploaded files); returns how
        many works went. Raises :class:`NotFoundError` for an artist the index does not hold."""
        from mimicry.store.catalogue import UPLOAD

        with self.store.writer(wait_s) as w:
            if not w.artist_exists(name):
                raise NotFoundError(f"{self.folder}: no artist {name!r} in the index")
            works = w.works(name)
            ids = [x.id for x in works]
            w.commit([], ids, remove_artist=name, audit=lambda cat, _: cat.record(
                actor.kind, actor.artist, "remove_artist", name, detail=str(len(ids)),
                request_id=actor.request_id))
            left = {x.path for x in w.works()}
            for x in works:
                if x.origin == UPLOAD and x.path not in left:
                    Path(x.path).unlink(missing_ok=True)
            for line in self._refresh_calibration(w):
                log.warning("%s", line)
        return len(ids)

    # -- registered artists (the service's writes) ----------------------------
    def register_artist(self, name: str, actor: Actor = CLI, wait_s: float | None = None) -> str:
        """Registers ``name`` (who may have no works yet) and returns their token,
        shown this once; the index keeps its hash. :class:`ConflictError` when
        the name is taken."""
        check_name(name)
        token, digest = new_token()
        with self.store.writer(wait_s) as w:
            if w.artist_exists(name):
                raise ConflictError(f"artist {name!r} is already registered")
            with w.change() as cat:
                cat.register_artist(name, digest)
                cat.record(actor.kind, actor.artist, "register_artist", name, request_id=actor.request_id)
        return token

    def rotate_token(self, name: str, actor: Actor = CLI, wait_s: float | None = None) -> str:
        """A new token for ``name`` (the old one stops working); returns it."""
        token, digest = new_token()
        with self.store.writer(wait_s) as w:
            if not w.artist_exists(name):
                raise NotFoundError(f"no artist {name!r} is registered")
            with w.change() as cat:
                cat.set_token(name, digest)
                cat.record(actor.kind, actor.artist, "rotate_token", name, request_id=actor.request_id)
        return token

    def artist_token_matches(self, name: str, token: str) -> bool:
        """Whether ``token`` is ``name``'s (False for an unknown artist; constant time)."""
        with self.store._reader() as cat:
            return token_matches(token, cat.token_sha256(name))

    def add_uploads(self, name: str, images: Sequence[ImageBytes], actor: Actor = CLI,
                    wait_s: float | None = None) -> list[int]:
        """Adds uploaded works to ``name`` (stored inside the index, named by hash;
        never pruned by ``mimicry index``) and returns their work ids, in order.
        Every image must decode, or nothing is added (:class:`ImageError`)."""
        from mimicry.embedding import Embedded
        from mimicry.store import NewWork
        from mimicry.store.catalogue import UPLOAD

        got = Embedded.gather(self._engine().embed(images, batch_size=self.settings.batch_size),
                              self.embedder.dim)
        if got.failed:
            raise got.failed[0][1]
        vecs = got.vectors
        with self.store.writer(wait_s, expect=self.embedder) as w:
            if not w.artist_exists(name):
                raise NotFoundError(f"no artist {name!r} is registered")
            stored = [store_upload(self.folder, img) for img in images]  # under the lock: see remove_work
            known = {x.path: x.id for x in w.works(name)}
            add = []
            for (path, sha), img, v in zip(stored, images, vecs):
                if str(path) not in known and all(str(path) != a.path for a, _ in add):
                    add.append((NewWork(name, str(path), sha, len(img.data), 0, origin=UPLOAD), v))

            def record(cat, new_ids: list[int]) -> None:
                known.update({a.path: wid for (a, _), wid in zip(add, new_ids)})
                ids = ",".join(str(known[str(path)]) for path, _ in stored)
                cat.record(actor.kind, actor.artist, "add_works", name, detail=ids, request_id=actor.request_id)

            if add:
                w.commit(add, [], audit=record)
            else:  # every image was there already: only the audit row is new
                record(w, [])
            out = [known[str(path)] for path, _ in stored]
            self._refresh_calibration(w)
        return out

    def remove_work(self, name: str, work_id: int, actor: Actor = CLI, wait_s: float | None = None) -> None:
        """Removes one of ``name``'s works (:class:`NotFoundError` when it is not theirs)."""
        from mimicry.store.catalogue import UPLOAD

        with self.store.writer(wait_s) as w:
            work = next((x for x in w.works(name) if x.id == work_id), None)
            if work is None:
                raise NotFoundError(f"artist {name!r} has no work {work_id}")
            w.commit([], [work_id], audit=lambda cat, _: cat.record(
                actor.kind, actor.artist, "remove_work", name, detail=str(work_id), request_id=actor.request_id))
            self._refresh_calibration(w)
            if work.origin == UPLOAD and not any(x.path == work.path for x in w.works()):
                Path(work.path).unlink(missing_ok=True)

    def audit(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Recorded writes after id ``after``, oldest first, at most ``limit``."""
        with self.store._reader() as cat:
            return cat.audit(after, limit)

    # -- calibration ----------------------------------------------------------
    def _refresh_calibration(self, w: Writer) -> list[str]:
        """After a portfolio change: recalibrate a calibrated index (same target
        rate, stored background); drop a calibration that no longer applies."""
        snap = w.snapshot()
        cal = calibration_of(snap, strict=False)
        if cal is None or calibration_state(snap, strict=False) != "stale":
            return []
        if len(snap.artists) < 2:
            w.set_calibration(None)
            return ["calibration dropped: fewer than two artists remain"]
        w.set_calibration(calibrate_snapshot(snap, cal.target_rate).to_arrays())
        return []

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
        from mimicry.embedding import Embedded

        rate = check_rate("fpr", self.settings.fpr if fpr is None else fpr)
        with self.store.writer(expect=self._embedder) as w:
            if background is not None:
                sources = expand_inputs(background)
                got = Embedded.gather(self._engine().embed(
                    sources, batch_size=_count(batch_size, self.settings.batch_size, "batch_size"),
                    progress=progress, stage="background"), self.embedder.dim)
                for err in got.errors:
                    log.warning("background image skipped: %s", err)
                w.set_background(got.vectors, background_groups(got.keys, background))
            cal = calibrate_snapshot(w.snapshot(), rate)
            w.set_calibration(cal.to_arrays())
            w.record(CLI.kind, None, "calibrate", str(self.folder),
                     detail=f"fpr {rate}, {cal.n_null} {cal.null_source} images")
        return cal

    # -- scanning -------------------------------------------------------------
    def _check_pin(self, snap: Snapshot) -> None:
        """The model in hand must still be the index's: another process may have
        rebuilt it under a new recipe since this object was made."""
        if snap.pin is not None:
            snap.pin.check(self.embedder, self.folder)

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
        from mimicry.verdict import image_matches

        s = self.settings
        top, evidence = _count(top, s.top, "top"), _count(evidence, s.evidence, "evidence")
        snap = self.snapshot()
        self._check_pin(snap)
        warnings = state_warnings(snap)
        cal = calibration_of(snap)
        promise = cal.promise() if cal is not None else None
        sources = expand_inputs(images)
        eng = self._engine(engine, address)
        if eng.name != "local" and any(isinstance(x, ImageBytes) for x in sources):
            raise InputError(f"--engine {eng.name} scans files; uploads are scanned locally")
        pending: dict[int, ScanResult] = {}  # by input position: the same upload twice gets two results
        nxt = 0
        for stretch in eng.embed(sources, keys=range(len(sources)), progress=progress, stage="scanning",
                                 batch_size=_count(batch_size, s.batch_size, "batch_size")):
            for pos, err in stretch.failed:
                pending[pos] = ScanResult(source_name(sources[pos]), [], err.reason)
            for pos, sha, (matches, artist, image_p) in zip(stretch.keys, stretch.sha256,
                                                            image_matches(snap, stretch.vectors, top, evidence)):
                pending[pos] = ScanResult(source_name(sources[pos]), matches, None, artist, sha, warnings,
                                          image_p, promise)
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1
        if nxt != len(sources):  # every input gets a result; anything else is a bug, said loudly
            raise RuntimeError(f"scan lost inputs from position {nxt} of {len(sources)}")

    def scan_model(self, samples: Sequence[ImageSource], alpha: float | None = None,
                   batch_size: int | None = None, evidence: int | None = None,
                   progress: ProgressFn | None = None) -> ModelVerdict:
        """Model-level verdict on images sampled from one fine-tuned model.

        Needs a calibrated index (:class:`NotCalibratedError`). For each artist,
        the samples' calibrated p-values are tested with a one-sided binomial
        test at several levels (:mod:`mimicry.verdict`); artists with p below
        ``alpha`` are the verdict. Findings list every artist with any evidence,
        by p-value, with the supporting samples paired with their nearest works.
        """
        from mimicry.embedding import Embedded
        from mimicry.verdict import judge_model

        s = self.settings
        a = check_rate("alpha", s.alpha if alpha is None else alpha)
        snap = self.snapshot()
        if calibration_of(snap) is None:
            raise NotCalibratedError(f"{self.folder}: scan-model needs a calibrated index; "
                                     f"run `mimicry calibrate`")
        self._check_pin(snap)
        inputs = expand_inputs(samples)
        got = Embedded.gather(self._engine().embed(
            inputs, keys=range(len(inputs)), batch_size=_count(batch_size, s.batch_size, "batch_size"),
            progress=progress, stage="samples"), self.embedder.dim)
        if not got.keys:
            raise InputError("no readable samples in " + ", ".join(source_name(x) for x in samples))
        verdict = judge_model(snap, got.vectors, [source_name(inputs[i]) for i in got.keys], a,
                              _count(evidence, s.evidence, "evidence"), got.skipped(),
                              (s.min_samples, s.max_samples))
        verdict.inputs[:] = got.keys
        return verdict


def _count(value: int | None, default: int, name: str) -> int:
    """``value`` (at least 1), or ``default`` when None."""
    return default if value is None else int(check_positive(name, value))  # type: ignore[arg-type]
