"""The Ray engine against the local one: one folder through both gives the
same vectors (1e-5) and the same catalogue, on a local Ray the test starts
with 2 CPUs; an embedding worker killed mid-batch (by an actor class the test
hands the engine) is retried and nothing is lost or duplicated; a scan streams
the same verdicts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from helpers import write_portfolio
from mimicry import StyleIndex

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    from mimicry.engines.ray import start

    start(num_cpus=2)
    yield
    ray.shutdown()


def catalogue(ix: StyleIndex) -> dict:
    ids, vecs = ix.vectors()
    works = {w.id: w for w in ix.works()}
    return {(works[int(i)].artist, Path(works[int(i)].path).name, works[int(i)].sha256): v
            for i, v in zip(ids, vecs)}


def test_ray_engine_matches_the_local_engine_through_a_worker_crash(tmp_path, local_ray, fresh_embedder):
    from mimicry.engines.ray import EmbedActor, RayEngine

    marker = tmp_path / "exited"

    class ExitsOnce(EmbedActor):
        """The first actor to find ``marker`` missing creates it and dies mid-batch.
        Defined here, so Ray ships the class (and ``marker``) to its workers by value."""

        def __call__(self, batch):
            import os

            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # a worker lost mid-batch
            return super().__call__(batch)

    portfolio = write_portfolio(tmp_path / "p", artists=3, works=7)
    (portfolio / "flatpop-fiona" / "broken.png").write_bytes(b"not an image at all")
    with StyleIndex.create(tmp_path / "local", embedder=fresh_embedder) as ix:
        local_report = ix.add_folder(portfolio)
        local = catalogue(ix)
    with StyleIndex.create(tmp_path / "ray", embedder=fresh_embedder) as ix:
        engine = RayEngine(asdict(ix.store.read_pin()), actor=ExitsOnce)
        ray_report = ix.add_folder(portfolio, engine=engine, batch_size=4)
        remote = catalogue(ix)
        assert len(ix.works()) == len(set(w.id for w in ix.works())) == 21  # nothing duplicated
    assert marker.exists(), "no worker was killed: the retry path was not exercised"
    assert set(remote) == set(local) and len(local) == 21  # nothing lost
    worst = max(float(np.abs(remote[k] - local[k]).max()) for k in local)
    assert worst <= 1e-5, worst
    assert [(Path(s.path).name, s.reason) for s in ray_report.skipped] == \
        [(Path(s.path).name, s.reason) for s in local_report.skipped] != []
    assert (ray_report.embedded, ray_report.works) == (local_report.embedded, local_report.works) == (21, 21)


def test_ray_scan_streams_the_local_results(tmp_path, local_ray, fresh_embedder):
    portfolio = write_portfolio(tmp_path / "p", artists=3, works=3)
    queries = write_portfolio(tmp_path / "q", artists=3, works=2, seed=5)
    with StyleIndex.create(tmp_path / "ix", embedder=fresh_embedder) as ix:
        ix.add_folder(portfolio)
        local = [r.to_dict() for r in ix.scan([queries])]
        streamed = [r.to_dict() for r in ix.iter_scan([queries], engine="ray", batch_size=2)]
    assert [r["image"] for r in streamed] == [r["image"] for r in local]
    for a, b in zip(streamed, local):
        assert [m["artist"] for m in a["matches"]] == [m["artist"] for m in b["matches"]]
        assert a["sha256"] == b["sha256"]
        np.testing.assert_allclose([m["score"] for m in a["matches"]], [m["score"] for m in b["matches"]], atol=1e-5)
