"""Images and vectors the tests make for themselves (PIL, numpy): no data files."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from mimicry.synthetic import STYLES, paint, scene


def write_portfolio(root: Path, artists: int = 3, works: int = 3, seed: int = 0) -> Path:
    """root/<artist>/work-i.png painted in that artist's procedural style."""
    for a, style in enumerate(STYLES[:artists]):
        d = root / style.name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(works):
            s = seed * 1000 + a * 100 + i
            paint(scene(s), style, s).save(d / f"work-{i}.png", compress_level=1)
    return root


def noise_image(path: Path, seed: int = 0, size=(64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def golden_images() -> list[Image.Image]:
    """Fixed generated images for the golden-vector tests: two painted styles,
    a noise field and a gradient, at sizes that exercise resize and crop."""
    rng = np.random.default_rng(1234)
    noise = Image.fromarray(rng.integers(0, 255, (180, 260, 3), dtype=np.uint8))
    y, x = np.mgrid[0:300, 0:200]
    grad = Image.fromarray(np.stack([x * 255 // 199, y * 255 // 299, (x + y) * 255 // 498], -1).astype(np.uint8))
    return [paint(scene(11), STYLES[0], 11), paint(scene(12), STYLES[3], 12), noise, grad]


def pin_older_recipe(folder: Path) -> None:
    """Turns a current index into one its model embedded with the previous
    recipe version (what ``mimicry index`` rebuilds): the pin row and its copy."""
    db = sqlite3.connect(folder / "catalogue.sqlite")
    pin = json.loads(db.execute("SELECT value FROM meta WHERE key='pin'").fetchone()[0])
    pin["recipe"] = {**pin["recipe"], "version": pin["recipe"]["version"] - 1}
    db.execute("UPDATE meta SET value=? WHERE key='pin'", (json.dumps(pin),))
    db.commit()
    db.close()
    (folder / "manifest.json").write_text(json.dumps(pin))


def consistent(folder: Path) -> tuple[int, int]:
    """Opens the index fresh and checks rows and vectors agree; returns (works, vectors)."""
    from mimicry import StyleIndex

    with StyleIndex.open(folder) as ix:
        ids, vecs = ix.vectors()
        works = ix.works()
        assert sorted(ids.tolist()) == sorted(w.id for w in works)
        if len(vecs):
            assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
        return len(works), len(ids)


def copy_portfolio(template: Path, dst: Path, artists: int = 3, works: int = 3) -> Path:
    """``write_portfolio(dst, artists, works)`` for ``works <= 3``, ``artists <= 3``
    (seed 0), copied from the session's template instead of painted: the same
    files byte for byte (work-i of artist a is painted with seed ``a * 100 + i``
    in both), so their vectors are already known."""
    import shutil

    for style in STYLES[:artists]:
        (dst / style.name).mkdir(parents=True, exist_ok=True)
        for i in range(works):
            shutil.copy2(template / style.name / f"work-{i}.png", dst / style.name / f"work-{i}.png")
    return dst


def demo_truth(out: Path) -> dict[str, str | None]:
    """The demo's truth (as :func:`mimicry.synthetic.make_dataset` records it):
    each imitation's artist by its file name, None for each unrelated photo."""
    truth: dict[str, str | None] = {
        p.name: p.stem.removeprefix("imitation-of-").rsplit("-", 1)[0] for p in (out / "imitations").glob("*.png")}
    truth.update({p.name: None for p in (out / "unrelated").glob("*.png")})
    return truth


def write_manifest(path: Path, portfolios: Path, imitations: Path, unrelated: Path,
                   truth: dict[str, str | None], relative_to: Path | None = None,
                   extra: tuple[str, ...] = ()) -> Path:
    """A ``path,role,artist,notes`` manifest: portfolios genuine, imitations with
    their artist from ``truth``, unrelated photos negative (paths relative to
    ``relative_to`` if given), then the ``extra`` lines as they are."""
    def name(f: Path) -> str:
        return os.path.relpath(f, relative_to) if relative_to else str(f)

    lines = ["path,role,artist,notes"]
    lines += [f"{name(f)},genuine,{f.parent.name}," for f in sorted(portfolios.rglob("*.png"))]
    lines += [f"{name(f)},imitation,{truth[f.name]}," for f in sorted(imitations.glob("*.png"))]
    lines += [f"{name(f)},negative,," for f in sorted(unrelated.glob("*.png"))]
    path.write_text("\n".join(lines + list(extra)) + "\n")
    return path


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The admin token of the apps the HTTP tests build, and its header.
ADMIN = "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def client_with(ix, env: dict[str, str] | None = None, **kwargs):
    """A TestClient of the app over ``ix`` with settings read from ``env`` (as
    the service reads them; the admin token :data:`ADMIN`); server errors are answers."""
    from fastapi.testclient import TestClient

    from mimicry.faces.http import create_app
    from mimicry.settings import get_settings

    settings = get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN, **(env or {})})
    return TestClient(create_app(ix, settings, **kwargs), raise_server_exceptions=False)


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, on a thread of this
    process: its base URL (the server stops when the block ends)."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the test server did not start"
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(index: Path, env: dict[str, str] | None = None):
    """``mimicry serve`` on ``index`` in a process of its own (no auth, CPU,
    ``env`` added to the environment), once ``/healthz`` answers: (process, url, port)."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mimicry", "serve", "--index", str(index), "--port", str(port),
                             "--device", "cpu", "--insecure-no-auth"],
                            env={**os.environ, "MIMICRY_ADMIN_TOKEN": "", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, port
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")
