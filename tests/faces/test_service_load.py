"""The service under load: one unreadable file among several is reported, not
fatal; thumbnails are made once and one at a time (memory stays flat under
concurrent GETs of a huge work); slow clients hold neither an in-flight slot
nor a connection past the header and body timeouts."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import serve, write_portfolio  # noqa: E402
from mimicry import StyleIndex  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.faces.http.thumbs import Thumbnails, cached_path  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402


def png(size=(8, 8), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def client(calibrated_copy, default_embedder):
    settings = replace(get_settings({}), admin_token="adm1n")
    return TestClient(create_app(StyleIndex.open(calibrated_copy, embedder=default_embedder), settings))


def test_an_unreadable_file_among_several_is_reported_and_the_rest_scanned(client, demo):
    """As the CLI: results in input order, the unreadable one with ``error`` and
    no matches; 422 only when no file is readable."""
    _, _, out = demo
    photo = (out / "unrelated" / "photo-00.png").read_bytes()
    files = [("files", ("a.png", photo, "image/png")), ("files", ("evil.png", b"MZ\x90\x00 no image", "image/png")),
             ("files", ("b.png", photo, "image/png"))]
    r = client.post("/v1/scan", files=files)
    assert r.status_code == 200, r.text
    a, evil, b = r.json()["results"]
    assert [a["image"], evil["image"], b["image"]] == ["a.png", "evil.png", "b.png"]
    assert a["error"] is None and a["matches"] and b["matches"] == a["matches"]
    assert "not an image type" in evil["error"] and evil["matches"] == [] and evil["artist"] is None
    r = client.post("/v1/scan", files=files[1:2] * 2)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_image"


def test_a_thumbnail_is_made_once_and_kept(tmp_path, monkeypatch):
    import mimicry.faces.http.thumbs as thumbs

    work = tmp_path / "w.png"
    work.write_bytes(png((600, 300)))
    made = []
    real = thumbs.render
    monkeypatch.setattr(thumbs, "render", lambda src, side: made.append(src) or real(src, side))
    t = Thumbnails(tmp_path / "ix", 64)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: t.get(work, "abc"), range(8)))
    assert len(made) == 1 and len(set(got)) == 1
    assert Image.open(io.BytesIO(got[0])).size == (64, 32) and cached_path(tmp_path / "ix", "abc", 64).is_file()
    assert not [p for p in (tmp_path / "ix" / "thumbnails").iterdir() if p.name.endswith(".tmp")]  # temporaries


def test_an_upload_s_thumbnail_is_kept_and_goes_with_its_work(client):
    admin = {"Authorization": "Bearer adm1n"}
    assert client.post("/v1/artists", json={"name": "gone-gus"}, headers=admin).status_code == 201
    data = png((300, 200), (40, 200, 90))
    r = client.post("/v1/artists/gone-gus/works", files=[("files", ("g.png", data, "image/png"))], headers=admin)
    assert r.status_code == 201, r.text
    import hashlib

    svc = client.app.state.service
    kept = cached_path(svc.index.folder, hashlib.sha256(data).hexdigest(), svc.settings.thumbnail_side)
    assert kept.is_file()  # made at upload
    thumb = client.get(f"/v1/works/{r.json()['works'][0]}/thumbnail")
    assert thumb.status_code == 200 and thumb.content == kept.read_bytes()
    assert client.delete("/v1/artists/gone-gus", headers=admin).status_code == 200
    assert not kept.exists()  # a withdrawn work leaves no image behind


# -- a real server ---------------------------------------------------------------
def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def small_index(tmp_path) -> Path:
    folder = tmp_path / "ix"
    StyleIndex.create(folder, device="cpu").add_folder(write_portfolio(tmp_path / "p", artists=2, works=2))
    return folder


def _rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow
def test_thumbnails_of_a_huge_upload_keep_memory_flat(small_index):
    """16 GETs at concurrency 8 of a stored 9000x9000 PNG raise the server's
    RSS by at most 300 MB (each full decode is about 320 MB)."""
    proc, url, _ = serve(small_index, {})
    try:
        r = httpx.post(url + "/v1/artists", json={"name": "huge-hal"}, timeout=30)
        assert r.status_code == 201, r.text
        r = httpx.post(url + "/v1/artists/huge-hal/works", timeout=300,
                       files=[("files", ("huge.png", png((9000, 9000), (10, 120, 200)), "image/png"))])
        assert r.status_code == 201, r.text
        work = r.json()["works"][0]
        time.sleep(1)
        before = _rss_mb(proc.pid)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.get(f"{url}/v1/works/{work}/thumbnail", timeout=300).status_code,
                                  range(16)))
        grew = _rss_mb(proc.pid) - before
        assert codes == [200] * 16 and grew <= 300, grew
    finally:
        _stop(proc)


def _slow_scan(port: int) -> socket.socket:
    """A scan request that sends its headers and the start of its body, then waits."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = ("POST /v1/scan HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 100000\r\n\r\n")
    sock.sendall(head.encode() + b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n')
    return sock


def _answer(sock: socket.socket, wait_s: float) -> bytes:
    sock.settimeout(wait_s)
    try:
        return sock.recv(4096)
    except socket.timeout:
        return b"(still open)"


@pytest.mark.slow
def test_slow_bodies_hold_no_inflight_slot_and_time_out(small_index, tmp_path):
    """MIMICRY_INFLIGHT connections stuck mid-body: a normal scan still answers
    200 at once; the stuck ones get 408 after the body timeout, and a
    connection stuck mid-headers is closed after the header timeout."""
    proc, url, port = serve(small_index, {"MIMICRY_INFLIGHT": "2", "MIMICRY_BODY_TIMEOUT": "4",
                                           "MIMICRY_HEADER_TIMEOUT": "2"})
    photo = [("files", ("p.png", png((64, 64)), "image/png"))]
    try:
        assert httpx.post(url + "/v1/scan", files=photo, timeout=120).status_code == 200  # model loaded
        stuck = [_slow_scan(port) for _ in range(2)]
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        time.sleep(0.5)  # the stuck requests have reached the app
        r = httpx.post(url + "/v1/scan", files=photo, timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 4, r.text
        assert _answer(half, 10) == b"" and time.monotonic() - start < 4  # closed mid-headers
        answers = [_answer(s, 10) for s in stuck]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert time.monotonic() - start < 8
        for s in stuck:
            s.close()
    finally:
        _stop(proc)
