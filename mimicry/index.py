"""``StyleIndex``: the one Python API behind the CLI, the service and the report.

An index is one folder::

    manifest.json        the model pin (backbone id, weights sha256, dim, schema)
    catalogue.sqlite     artists and works (path, sha256, size, time added, vector id)
    vectors.<N>.faiss    the vectors of committed generation N (IndexIDMap2, exact IP)
    lock                 held by the one writer at a time

Promises:
- Re-indexing unchanged files embeds nothing; a changed file is re-embedded; bytes
  already embedded under another path are reused, not re-embedded.
- A kill at any moment leaves the last committed state, loadable; indexing
  commits every ``checkpoint`` images, so a long run resumes where it stopped.
- One unreadable file is reported (path and reason) and skipped; the rest go on.
"""

from __future__ import annotations

import fcntl
import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mimicry import manifest as manifest_io
from mimicry import vectors as vector_io
from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.catalogue import Catalogue, Work
from mimicry.calibration import Calibration, calibrate
from mimicry.embedding import embed_all, embed_paths
from mimicry.images import expand_inputs, sha256_file
from mimicry.manifest import IndexMismatchError, Manifest
from mimicry.portfolio import read_portfolio
from mimicry.results import Evidence, IndexReport, Match, ScanResult, Skipped
from mimicry.scoring import artist_columns, matches_from_neighbours, max_per_artist
from mimicry.verdict import ArtistFinding, ModelVerdict, artist_tests, image_verdicts

log = logging.getLogger(__name__)

__all__ = ["IndexInfo", "IndexMismatchError", "StyleIndex"]

CATALOGUE = "catalogue.sqlite"


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds and which model it is pinned to."""

    path: str
    backbone_id: str
    model_spec: str
    weights_sha256: str
    dim: int
    schema_version: int
    package_version: str
    artists: dict[str, int]
    works: int


@dataclass
class _Pending:
    artist: str
    path: Path
    sha256: str
    size: int
    mtime_ns: int
    replaces: int | None  # work id whose vector this one replaces


def _replaced(items: object) -> list[int]:
    """Work ids that the given pending works replace."""
    return [p.replaces for p in items if p.replaces is not None]  # type: ignore[attr-defined]


class StyleIndex:
    """A folder of artists' works embedded with one pinned model."""

    def __init__(self, folder: Path, man: Manifest, embedder: Embedder | None, device: str) -> None:
        self.folder = folder
        self.manifest = man
        self._embedder = embedder
        self._device = device
        self.catalogue = Catalogue(folder / CATALOGUE)
        self._load_vectors()

    # -- opening --------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        embedder: Embedder | None = None,
    ) -> StyleIndex:
        """Creates an empty index at ``path`` pinned to ``model`` (or opens it, if
        one pinned to the same model is already there)."""
        folder = Path(path)
        if (folder / manifest_io.FILENAME).exists():
            return cls.open(folder, device=device, model=model, embedder=embedder)
        embedder = embedder or load_embedder(model, device)
        folder.mkdir(parents=True, exist_ok=True)
        man = Manifest.new(embedder.model_id, model, embedder.weights_sha256, embedder.dim)
        Catalogue(folder / CATALOGUE).close()
        manifest_io.write(folder, man)
        return cls(folder, man, embedder, device)

    @classmethod
    def open(
        cls,
        path: str | Path,
        device: str = "auto",
        model: str | None = None,
        embedder: Embedder | None = None,
    ) -> StyleIndex:
        """Opens an existing index. The model is built lazily from the manifest
        (or from ``model``/``embedder``, which must match the pin exactly)."""
        folder = Path(path)
        man = manifest_io.read(folder)
        if embedder is None and model is not None:
            embedder = load_embedder(model, device)
        if embedder is not None:
            man.check_model(embedder.model_id, embedder.weights_sha256, embedder.dim, folder)
        return cls(folder, man, embedder, device)

    @property
    def embedder(self) -> Embedder:
        """The pinned model, built on first use."""
        if self._embedder is None:
            emb = load_embedder(self.manifest.model_spec, self._device)
            self.manifest.check_model(emb.model_id, emb.weights_sha256, emb.dim, self.folder)
            self._embedder = emb
        return self._embedder

    def close(self) -> None:
        self.catalogue.close()

    def __enter__(self) -> StyleIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_vectors(self) -> None:
        """Loads the committed generation, retrying if a writer replaces it meanwhile."""
        for attempt in range(20):
            generation = int(self.catalogue.get_meta("generation", "0") or 0)
            try:
                self._index = vector_io.load(self.folder, generation, self.manifest.dim)
                break
            except RuntimeError:
                if attempt == 19:
                    raise
                time.sleep(0.05)
        self._generation = generation
        self._vectors_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        works = self.catalogue.works()
        self._work_artist = {w.id: w.artist for w in works}
        self._work_path = {w.id: w.path for w in works}

    # -- information ----------------------------------------------------------
    def info(self) -> IndexInfo:
        m = self.manifest
        counts = self.catalogue.artist_counts()
        return IndexInfo(
            str(self.folder), m.backbone_id, m.model_spec, m.weights_sha256, m.dim,
            m.schema_version, m.package_version, counts, sum(counts.values()),
        )

    def artists(self) -> list[str]:
        return self.catalogue.artists()

    def works(self, artist: str | None = None) -> list[Work]:
        return self.catalogue.works(artist)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(work ids, vectors) of everything indexed, as of the committed
        generation (one copy per generation; treat the arrays as read-only)."""
        if self._vectors_cache is None or self._vectors_cache[0] != self._generation:
            self._vectors_cache = (self._generation, *vector_io.all_vectors(self._index))
        return self._vectors_cache[1], self._vectors_cache[2]

    # -- writing --------------------------------------------------------------
    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Exclusive write access; reloads the committed state and clears leftovers."""
        with open(self.folder / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load_vectors()
                vector_io.remove_stale(self.folder, self._generation)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, add: list[tuple[_Pending, np.ndarray]], remove_ids: list[int]) -> None:
        """Adds and removes works as one transaction: rows, vectors and generation
        commit together or not at all."""
        if not add and not remove_ids:
            return
        cat = self.catalogue
        cat.begin()
        try:
            cat.delete_works(remove_ids)
            new_ids = [
                cat.add_work(p.artist, str(p.path), p.sha256, p.size, p.mtime_ns) for p, _ in add
            ]
            vector_io.remove(self._index, remove_ids)
            if add:
                vector_io.add(self._index, np.stack([v for _, v in add]), new_ids)
            generation = self._generation + 1
            vector_io.write(self.folder, generation, self._index)
            cat.set_meta("generation", str(generation))
            cat.commit()
        except BaseException:
            cat.rollback()
            self._load_vectors()  # back to the committed state
            raise
        previous, self._generation = self._generation, generation
        for wid in remove_ids:
            self._work_artist.pop(wid, None)
            self._work_path.pop(wid, None)
        for (p, _), wid in zip(add, new_ids):
            self._work_artist[wid] = p.artist
            self._work_path[wid] = str(p.path)
        vector_io.remove_stale(self.folder, self._generation)
        log.debug("committed generation %d (was %d)", generation, previous)

    def add_artist(
        self,
        name: str,
        paths: Sequence[str | Path],
        *,
        prune: bool = False,
        batch_size: int = 32,
        checkpoint: int = 512,
        progress: bool = False,
    ) -> IndexReport:
        """Adds (or updates) ``name``'s works from ``paths`` (files or folders).

        With ``prune``, works of ``name`` not among ``paths`` are removed.
        """
        return self.sync({name: [Path(p) for p in paths]}, prune=prune, batch_size=batch_size,
                         checkpoint=checkpoint, progress=progress)

    def add_folder(
        self, source: str | Path, *, batch_size: int = 32, checkpoint: int = 512, progress: bool = False
    ) -> IndexReport:
        """Indexes a portfolio folder (one sub-folder per artist) or ``path,artist`` CSV.

        For each artist it contains, the index afterwards holds exactly that
        artist's readable files there: new and changed files are embedded, files
        that are gone are removed. Artists not in ``source`` are left alone.
        """
        portfolio = read_portfolio(source)
        report = self.sync(portfolio.works, prune=True, batch_size=batch_size,
                           checkpoint=checkpoint, progress=progress)
        report.skipped[:0] = portfolio.skipped
        return report

    def sync(
        self,
        works: dict[str, list[Path]],
        *,
        prune: bool = True,
        batch_size: int = 32,
        checkpoint: int = 512,
        progress: bool = False,
    ) -> IndexReport:
        """Brings the listed artists' works in line with ``works`` (see :meth:`add_folder`)."""
        report = IndexReport()
        with self._writer():
            pending, pruned = self._plan(works, prune, report)
            # Bytes already embedded (under another path or artist) are reused.
            known_sha = {w.sha256: w.id for w in self.catalogue.works()}
            reuse = [(p, vector_io.reconstruct(self._index, [known_sha[p.sha256]])[0])
                     for p in pending if p.sha256 in known_sha]
            to_embed = [p for p in pending if p.sha256 not in known_sha]
            self._commit(reuse, pruned + _replaced(p for p, _ in reuse))
            report.removed += len(pruned)
            report.embedded += len(reuse)
            by_path: dict[Path, list[_Pending]] = {}
            for p in to_embed:
                by_path.setdefault(p.path, []).append(p)
            buffer: list[tuple[_Pending, np.ndarray]] = []
            failed: list[_Pending] = []
            for batch in embed_paths(self.embedder, list(by_path), batch_size=batch_size,
                                     progress=progress, desc="indexing"):
                for err in batch.errors:
                    report.skipped.append(Skipped(err.path, err.reason))
                    failed.extend(by_path[Path(err.path)])
                buffer.extend((p, vec) for path, vec in zip(batch.paths, batch.vectors)
                              for p in by_path[path])
                if len(buffer) >= checkpoint:
                    self._commit(buffer, _replaced(p for p, _ in buffer))
                    report.embedded += len(buffer)
                    buffer = []
            # A changed file that no longer reads loses its old vector too.
            self._commit(buffer, _replaced(p for p, _ in buffer) + _replaced(failed))
            report.embedded += len(buffer)
            self.catalogue.db.execute(
                "DELETE FROM artists WHERE id NOT IN (SELECT DISTINCT artist_id FROM works)"
            )
            counts = self.catalogue.artist_counts()
            report.artists = len(counts)
            report.works = sum(counts.values())
        return report

    def _plan(
        self, works: dict[str, list[Path]], prune: bool, report: IndexReport
    ) -> tuple[list[_Pending], list[int]]:
        """Decides, per listed file, unchanged / new / changed; and which works go."""
        pending: list[_Pending] = []
        pruned: list[int] = []
        for artist, paths in works.items():
            existing = {w.path: w for w in self.catalogue.works(artist)}
            listed: set[str] = set()
            for path in expand_inputs(paths):
                path = path.resolve()
                key = str(path)
                if key in listed:
                    continue
                listed.add(key)
                try:
                    st = path.stat()
                except OSError as exc:
                    report.skipped.append(Skipped(key, f"cannot read file ({exc.strerror or exc})"))
                    continue
                old = existing.get(key)
                if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                    report.unchanged += 1
                    continue
                try:
                    sha = sha256_file(path)
                except OSError as exc:
                    report.skipped.append(Skipped(key, f"cannot read file ({exc.strerror or exc})"))
                    continue
                if old and old.sha256 == sha:
                    self.catalogue.touch_work(old.id, st.st_size, st.st_mtime_ns)
                    report.unchanged += 1
                    continue
                pending.append(_Pending(artist, path, sha, st.st_size, st.st_mtime_ns,
                                        old.id if old else None))
            if prune:
                pruned.extend(w.id for p, w in existing.items() if p not in listed)
        return pending, pruned

    def remove_artist(self, name: str) -> int:
        """Removes ``name`` and all their vectors; returns how many works went.
        Raises ``KeyError`` for an artist the index does not hold."""
        with self._writer():
            ids = [w.id for w in self.catalogue.works(name)]
            if self.catalogue.artist_id(name) is None:
                raise KeyError(f"no artist {name!r} in {self.folder}")
            self._commit([], ids)
            self.catalogue.db.execute("DELETE FROM artists WHERE name=?", (name,))
            return len(ids)

    # -- calibration ----------------------------------------------------------
    def calibrate(self, background: Sequence[str | Path] | None = None, fpr: float = 0.01,
                  batch_size: int = 32, progress: bool = False) -> Calibration:
        """Computes and stores per-artist thresholds at false-positive rate ``fpr``.

        Negatives: every other artist's works, plus ``background`` images
        (embedded once and kept in the index, so recalibration after a portfolio
        change reuses them). Without ``background`` the stored set, if any, is used.
        Returns the calibration; skipped background files are logged.
        """
        with self._writer():
            if background is not None:
                _, bg, errors = embed_all(self.embedder, expand_inputs(background), batch_size,
                                          progress=progress, desc="background")
                for err in errors:
                    log.warning("background image skipped: %s", err)
                buf = io.BytesIO()
                np.save(buf, bg)
                self.catalogue.set_blob("background", buf.getvalue())
            return self._recalibrate(fpr)

    def _background(self) -> np.ndarray | None:
        data = self.catalogue.get_blob("background")
        return None if data is None else np.load(io.BytesIO(data))

    def _recalibrate(self, fpr: float) -> Calibration:
        ids, vecs = self.vectors()
        if len(set(self._work_artist.values())) < 2:
            raise ValueError(f"{self.folder}: calibration needs at least two artists")
        artists = [self._work_artist[int(i)] for i in ids]
        cal = calibrate(vecs, artists, self._background(), fpr=fpr, generation=self._generation)
        self.catalogue.set_blob("calibration", cal.to_bytes())
        return cal

    @property
    def calibration(self) -> Calibration | None:
        """The stored calibration, redone first if the portfolio changed since;
        None if the index was never calibrated."""
        data = self.catalogue.get_blob("calibration")
        if data is None:
            return None
        cal = Calibration.from_bytes(data)
        if cal.generation != self._generation or cal.artists != sorted(set(self._work_artist.values())):
            log.info("portfolio changed since calibration: recalibrating")
            with self._writer():
                cal = self._recalibrate(cal.fpr)
        return cal

    # -- scanning -------------------------------------------------------------
    def scan(
        self,
        images: Sequence[str | Path],
        top: int = 3,
        evidence: int = 3,
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[ScanResult]:
        """Scores each image (files, or folders of images) against every artist.

        Returns one :class:`ScanResult` per input file, in input order; a file
        that cannot be read gets ``error`` set and no matches.
        """
        paths = expand_inputs(images)
        cal = self.calibration
        results: dict[Path, ScanResult] = {}
        for batch in embed_paths(self.embedder, paths, batch_size=batch_size,
                                 progress=progress, desc="scanning"):
            for err in batch.errors:
                results[Path(err.path)] = ScanResult(err.path, [], err.reason)
            scored = self._score(batch.vectors, cal, top, evidence)
            for path, res in zip(batch.paths, scored):
                results[path] = ScanResult(str(path), res.matches, None, res.artist)
        return [results[p] for p in paths]

    def scan_vectors(self, vectors: np.ndarray, top: int = 3, evidence: int = 3) -> list[ScanResult]:
        """Scores already-embedded query vectors (rows) against every artist.

        Artists are ranked by similarity; on a calibrated index each match also
        says whether it is flagged, at what false-positive rate."""
        return self._score(vectors, self.calibration, top, evidence)

    def _score(self, vectors: np.ndarray, cal: Calibration | None, top: int,
               evidence: int) -> list[ScanResult]:
        if cal is not None and len(vectors):
            return self._scan_calibrated(vectors, cal, top, evidence)
        n_works = self._index.ntotal
        if n_works == 0 or len(vectors) == 0:
            return [ScanResult("", []) for _ in range(len(vectors))]
        want_artists = min(top, len(set(self._work_artist.values())))
        k = min(n_works, max(64, 8 * top * evidence))
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        while True:
            sims, ids = self._index.search(queries, k)
            out = [
                matches_from_neighbours(s, i, self._work_artist, self._work_path, top, evidence)
                for s, i in zip(sims, ids)
            ]
            if k >= n_works or all(len(m) >= want_artists for m in out):
                break
            k = min(n_works, k * 4)
        return [ScanResult("", m) for m in out]

    def _artist_similarities(
        self, vectors: np.ndarray, artists: list[str]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
        """(work ids, query x work similarities, each artist's work columns,
        query x artist max similarity) against every indexed work."""
        ids, works = self.vectors()
        sims = np.asarray(vectors, dtype=np.float32) @ works.T
        cols = artist_columns([self._work_artist[int(i)] for i in ids], artists)
        return ids, sims, cols, max_per_artist(sims, cols)

    def _scan_calibrated(self, vectors: np.ndarray, cal: Calibration, top: int,
                         evidence: int) -> list[ScanResult]:
        ids, sims, cols, raw = self._artist_similarities(vectors, cal.artists)
        z = cal.normalise(raw)
        fpr = cal.fpr_matrix(raw)
        flags = cal.flags(raw)
        verdicts = image_verdicts(raw, cal)
        out = []
        for q in range(len(vectors)):
            matches = []
            for j in np.argsort(-raw[q]):  # raw ranks better than z (README, "Accuracy")
                flagged = bool(flags[q, j])
                if len(matches) >= top and not flagged:
                    continue
                near = cols[j][np.argsort(-sims[q, cols[j]])[:evidence]]
                ev = [Evidence(self._work_path[int(ids[i])], float(sims[q, i])) for i in near]
                matches.append(Match(cal.artists[j], float(raw[q, j]), ev, float(z[q, j]), flagged,
                                     float(fpr[q, j])))
            verdict = cal.artists[verdicts[q]] if verdicts[q] >= 0 else None
            out.append(ScanResult("", matches, None, verdict))
        return out

    def scan_model(self, samples: Sequence[str | Path], alpha: float = 0.001,
                   batch_size: int = 32, evidence: int = 3) -> ModelVerdict:
        """Model-level verdict on images sampled from one fine-tuned model.

        Needs a calibrated index. For each artist, the samples' calibrated
        false-positive rates are tested with a one-sided binomial test at
        several levels (:mod:`mimicry.verdict`); artists with p < ``alpha``
        are the verdict. Findings list every artist with any evidence, by
        p-value, with the supporting samples and the nearest works.
        """
        cal = self.calibration
        if cal is None:
            raise ValueError(f"{self.folder}: scan-model needs a calibrated index; run `mimicry calibrate`")
        ok, q, errors = embed_all(self.embedder, expand_inputs(samples), batch_size)
        if not ok:
            raise ValueError("no readable samples in " + ", ".join(map(str, samples)))
        ids, sims, cols, raw = self._artist_similarities(q, cal.artists)
        tests = artist_tests(raw, cal)
        flagged = cal.flags(raw).sum(axis=0)
        findings = []
        for j in np.argsort([t.p_value for t in tests], kind="stable"):
            t = tests[j]
            if t.p_value >= 1.0:
                continue
            hit = t.hits[np.argsort(-raw[t.hits, j])]
            near = cols[j][np.argsort(-sims[hit][:, cols[j]].max(axis=0))[:evidence]]
            findings.append(ArtistFinding(cal.artists[j], int(flagged[j]), t.p_value, t.level, len(hit),
                                          [str(ok[i]) for i in hit],
                                          [self._work_path[int(ids[i])] for i in near]))
        verdict = [f.artist for f in findings if f.p_value < alpha]
        skipped = [{"path": e.path, "reason": e.reason} for e in errors]
        return ModelVerdict(len(ok), alpha, verdict, findings, skipped)
