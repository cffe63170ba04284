"""The service as a real process: acknowledged writes survive SIGKILL, and the
CLI and the service share one index without corrupting it."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from helpers import consistent, serve, write_portfolio  # noqa: E402
from mimicry import StyleIndex  # noqa: E402

pytestmark = pytest.mark.slow


def test_acknowledged_writes_survive_sigkill(tmp_path):
    """20 trials: a stream of writes (registrations and uploads), SIGKILL at a
    random moment; every write that got a 2xx is there after a restart."""
    portfolio = write_portfolio(tmp_path / "p", artists=2, works=2)
    folder = tmp_path / "ix"
    StyleIndex.create(folder, device="cpu").add_folder(portfolio)
    image = next((portfolio / "dotwork-dora").iterdir()).read_bytes()
    from mimicry.synthetic import photo_like

    def fresh_png(i: int) -> bytes:  # distinct bytes per upload: every upload writes a file
        import io

        buf = io.BytesIO()
        photo_like(500_000 + i).resize((64, 64)).save(buf, "PNG")
        return buf.getvalue()
    rng = random.Random(0)
    acknowledged: list[str] = []
    uploaded: dict[str, int] = {}
    trials = 20
    for trial in range(trials):
        proc, url, _ = serve(folder)
        warm = httpx.post(url + "/v1/scan", files=[("files", ("w.png", image, "image/png"))], timeout=60)
        assert warm.status_code == 200  # the model is loaded: kills land among writes
        stop = threading.Event()

        def writes() -> None:
            i = 0
            while not stop.is_set():
                name = f"artist-{trial:02d}-{i:03d}"
                i += 1
                try:
                    r = httpx.post(url + "/v1/artists", json={"name": name}, timeout=5)
                    if r.status_code == 201:
                        acknowledged.append(name)
                        r = httpx.post(f"{url}/v1/artists/{name}/works", timeout=5,
                                       files=[("files", ("w.png", fresh_png(trial * 1000 + i), "image/png"))])
                        if r.status_code == 201:
                            uploaded[name] = r.json()["works"][0]
                except httpx.TransportError:
                    return

        writer = threading.Thread(target=writes)
        before = len(acknowledged)
        writer.start()
        deadline = time.monotonic() + 60  # the kill lands mid-stream: after this trial's first write
        while len(acknowledged) == before and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        writer.join()
        with StyleIndex.open(folder) as ix:
            counts = ix.info().artists
            works = {w.id: w for w in ix.works()}
        missing = [a for a in acknowledged if a not in counts]
        assert not missing, (trial, missing)
        assert all(wid in works for wid in uploaded.values()), trial
        for wid in uploaded.values():  # the stored file is whole: its bytes hash to the work's sha256
            data = Path(works[wid].path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == works[wid].sha256, (trial, wid)
        consistent(folder)
    # Every kill landed mid-stream, after some acknowledged writes (no throughput floor: a busy machine is slow).
    assert len(acknowledged) >= trials and uploaded


def test_cli_index_and_service_writes_share_the_index(tmp_path):
    portfolio = write_portfolio(tmp_path / "p", artists=3, works=4)
    folder = tmp_path / "ix"
    StyleIndex.create(folder, device="cpu").add_folder(write_portfolio(tmp_path / "first", artists=1, works=2))
    proc, url, _ = serve(folder)
    try:
        cli = subprocess.Popen([sys.executable, "-m", "mimicry", "index", str(portfolio), "--index", str(folder),
                                "-q", "--batch-size", "2"], env={**os.environ, "MIMICRY_CHECKPOINT": "2"})
        done, retried = [], 0
        for i in range(15):
            while True:
                r = httpx.post(url + "/v1/artists", json={"name": f"svc-{i}"}, timeout=30)
                if r.status_code != 503:
                    break
                retried += 1
                time.sleep(float(r.headers["Retry-After"]) / 10)
            assert r.status_code == 201
            done.append(f"svc-{i}")
        assert cli.wait(timeout=300) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with StyleIndex.open(folder) as ix:
        artists = ix.info().artists
    assert all(a in artists for a in done) and sum(1 for a in artists if not a.startswith("svc-")) == 3
    assert consistent(folder)[0] == 12
