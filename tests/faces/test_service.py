"""The HTTP service through its factory (httpx TestClient): scans, model
verdicts, artists, health; every limit in order; scan tokens."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.faces.service import create_app  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402


@pytest.fixture
def service(calibrated_copy, default_embedder):
    def make(**overrides) -> TestClient:
        settings = replace(get_settings({}), **overrides)
        ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
        return TestClient(create_app(ix, settings))

    return make


def files_of(paths):
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def png(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_scan_flags_an_imitation_with_evidence_as_data(service, demo):
    res, _, out = demo
    client = service()
    target = res.fine_tuned_artist
    r = client.post("/v1/scan", files=files_of([out / "imitations" / f"imitation-of-{target}-1.png",
                                                out / "unrelated" / "photo-00.png"]))
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["image"] == f"imitation-of-{target}-1.png" and first["artist"] == target
    ev = first["matches"][0]["evidence"][0]
    assert set(ev) == {"work_id", "artist", "sha256", "similarity"}  # never a server path
    assert second["artist"] is None and first["promise"]["negatives"] == 100
    assert str(out) not in r.text and "/tmp" not in r.text  # no server path anywhere


def test_scan_model_health_and_artists(service, demo):
    res, _, out = demo
    client = service()
    samples = sorted((out / "samples-fine-tune").glob("*.png"))
    r = client.post("/v1/scan-model", files=files_of(samples))
    assert r.status_code == 200 and r.json()["artists"] == [res.fine_tuned_artist]
    r = client.post("/v1/scan-model", files=files_of(samples[:3]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input"
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["works"] == 24 and health["recipe"]["version"] >= 1
    names = [a["name"] for a in client.get("/v1/artists").json()["artists"]]
    assert res.fine_tuned_artist in names and len(names) == 4
    one = client.get(f"/v1/artists/{res.fine_tuned_artist}").json()
    assert one["works"] == 6 and one["calibration"] == "current"
    r = client.get("/v1/artists/nobody")
    assert r.status_code == 404 and r.json() == {"error": {"code": "not_found",
                                                           "message": "no artist 'nobody' is registered"}}
    assert client.get("/openapi.json").status_code == 200


def test_limits_in_order(service):
    client = service(request_bytes=10_000, upload_bytes=2_000, request_files=3)
    r = client.post("/v1/scan", files=[("files", ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 20_000, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"  # request, before decoding
    r = client.post("/v1/scan", files=[("files", ("a.png", png((64, 64)) + b"0" * 3000, "image/png"))])
    assert r.status_code == 413 and "per file" in r.json()["error"]["message"]
    r = client.post("/v1/scan", files=[("files", (f"{i}.png", png(), "image/png")) for i in range(4)])
    assert r.status_code == 413 and "4 files" in r.json()["error"]["message"]
    r = client.post("/v1/scan", files=[("files", ("evil.png", b"MZ\x90\x00 not an image", "image/png"))])
    assert r.status_code == 415 and "evil.png" in r.json()["error"]["message"]
    client = service(max_pixels=100)
    r = client.post("/v1/scan", files=[("files", ("bomb.png", png((20, 20)), "image/png"))])
    assert r.status_code == 422 and "decompression bomb" in r.json()["error"]["message"]
    r = client.post("/v1/scan", files=[("files", ("../../etc/passwd.png", png(), "image/png"))])
    assert r.json()["results"][0]["image"] == "passwd.png"  # a name is a label, never a path


def test_scan_token(service, demo):
    _, _, out = demo
    client = service(scan_token="s3cret", admin_token="adm1n")
    photo = files_of([out / "unrelated" / "photo-01.png"])
    assert client.post("/v1/scan", files=photo).status_code == 401
    r = client.post("/v1/scan", files=photo, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    for token in ("s3cret", "adm1n"):
        assert client.post("/v1/scan", files=photo, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # health stays open


@pytest.mark.slow
def test_a_real_server_process_answers_over_http(calibrated_copy, demo):
    """`mimicry serve` in its own process on a free loopback port, scanned over HTTP."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    _, _, out = demo
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mimicry", "serve", "--index", str(calibrated_copy),
                             "--port", str(port), "--device", "cpu"],
                            env={**os.environ, "MIMICRY_SCAN_TOKEN": ""}, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        r = httpx.post(url + "/v1/scan", files=files_of([out / "unrelated" / "photo-02.png"]), timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["image"] == "photo-02.png"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
