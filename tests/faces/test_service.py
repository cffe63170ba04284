"""The HTTP service through its factory (httpx TestClient): scans, model
verdicts, artists, health; every limit in order; scan tokens."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402


@pytest.fixture
def service(calibrated_copy, default_embedder):
    def make(**overrides) -> TestClient:
        settings = replace(get_settings({}), **{"admin_token": ADMIN, **overrides})
        ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
        return TestClient(create_app(ix, settings))

    return make


ADMIN = "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


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
    assert second["artist"] is None and first["promise"]["negatives"] == 120
    assert str(out) not in r.text and "/tmp" not in r.text  # no server path anywhere


def test_scan_model_health_and_artists(service, demo):
    res, _, out = demo
    client = service()
    samples = sorted((out / "samples-fine-tune").glob("*.png"))
    r = client.post("/v1/scan-model", files=files_of(samples))
    assert r.status_code == 200 and r.json()["artists"] == [res.fine_tuned_artist] and r.json()["review"] == []
    tiers = r.json()["tiers"]
    assert tiers["review"]["makers"] == 40 and tiers["review"]["rule"] == "images or makers"
    assert tiers["imitates"]["rule"] == "images and makers" and not tiers["imitates"]["certified"]
    r = client.post("/v1/scan-model", files=files_of(samples[:1]))  # one sample is judged, with a warning
    assert r.status_code == 200 and r.json()["n_samples"] == 1
    assert any("fewer than the 8" in w for w in r.json()["warnings"])
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
    assert r.status_code == 422 and "evil.png" in r.json()["error"]["message"]  # no file readable: 422
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
                             "--port", str(port), "--device", "cpu", "--read-only"],
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


def test_artists_register_upload_withdraw_and_every_write_is_audited(service, demo):
    _, _, out = demo
    client = service()
    assert client.app.state.index.store.ann_in_background  # an upload never waits for an index build
    before = client.get("/v1/audit", headers=AS_ADMIN).json()
    assert [e["action"] for e in before["entries"]] == ["index", "calibrate", "index"]  # the demo's (a 4th artist came later)
    r = client.post("/v1/artists", json={"name": "new-artist"})
    assert r.status_code == 401
    r = client.post("/v1/artists", json={"name": "new-artist"}, headers=AS_ADMIN)
    assert r.status_code == 201 and r.json()["name"] == "new-artist"
    token = r.json()["token"]
    assert client.post("/v1/artists", json={"name": "new-artist"}, headers=AS_ADMIN).status_code == 409
    assert client.post("/v1/artists", json={"name": "../etc"}, headers=AS_ADMIN).status_code == 400
    assert {"name": "new-artist", "works": 0} in client.get("/v1/artists").json()["artists"]

    mine = {"Authorization": f"Bearer {token}"}
    work = files_of([out / "imitations" / "imitation-of-wash-wen-0.png"])
    r = client.post("/v1/artists/new-artist/works", files=work, headers=mine)
    assert r.status_code == 201, r.text
    [work_id] = r.json()["works"]
    assert client.get("/v1/artists/new-artist").json()["works"] == 1
    # The next scans see the write; the stored file is named by hash inside the index.
    r = client.post("/v1/scan", files=work).json()["results"][0]
    assert r["matches"][0]["artist"] == "new-artist" and r["matches"][0]["score"] > 0.999

    # An artist's token reaches that artist only: 403 whether or not the other exists.
    other = "dotwork-dora"
    assert client.delete(f"/v1/artists/{other}/works/1", headers=mine).status_code == 403
    assert client.delete("/v1/artists/nobody-at-all", headers=mine).status_code == 403
    assert client.delete(f"/v1/artists/{other}", headers={"Authorization": "Bearer nope"}).status_code == 403
    r = client.delete(f"/v1/artists/new-artist/works/{work_id + 1000}", headers=mine)
    assert r.status_code == 404

    assert client.post("/v1/artists/nobody/token", headers=AS_ADMIN).status_code == 404
    assert client.post("/v1/artists/new-artist/token", headers=mine).status_code == 403  # admin only
    rotated = client.post("/v1/artists/new-artist/token", headers=AS_ADMIN).json()["token"]
    assert client.delete(f"/v1/artists/new-artist/works/{work_id}", headers=mine).status_code == 403
    mine = {"Authorization": f"Bearer {rotated}"}
    assert client.delete(f"/v1/artists/new-artist/works/{work_id}", headers=mine).status_code == 200
    assert client.delete("/v1/artists/new-artist", headers=mine).json() == {"artist": "new-artist", "removed": 0}
    assert client.get("/v1/artists/new-artist").status_code == 404

    assert client.get("/v1/audit", headers=mine).status_code == 403
    log = client.get(f"/v1/audit?after={before['next']}", headers=AS_ADMIN).json()
    actions = [(e["action"], e["actor"]) for e in log["entries"]]
    assert actions == [("register_artist", "admin"), ("add_works", "artist"), ("rotate_token", "admin"),
                       ("remove_work", "artist"), ("remove_artist", "artist")]
    assert all(e["request_id"] for e in log["entries"])
    assert client.get(f"/v1/audit?after={log['next']}", headers=AS_ADMIN).json()["entries"] == []


def test_writes_need_an_admin_token_or_an_explicit_insecure_choice(calibrated_copy, default_embedder):
    from mimicry.errors import InputError

    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    with pytest.raises(InputError, match="MIMICRY_ADMIN_TOKEN"):
        create_app(ix, get_settings({}))
    read_only = TestClient(create_app(ix, get_settings({}), writes=False))
    assert read_only.post("/v1/artists", json={"name": "x"}).status_code == 403
    open_ = TestClient(create_app(ix, get_settings({}), insecure_no_auth=True))
    assert open_.post("/v1/artists", json={"name": "x"}).status_code == 201


def test_a_write_while_another_process_holds_the_lock_answers_503(service, calibrated_copy):
    # The lock stays held for the whole request: the write's wait for it (1 s
    # by default) only waits, and ends in the same 503 at 0.2 s.
    client = service(write_wait_s=0.2)
    holder = StyleIndex.open(calibrated_copy)
    with holder.store.writer():
        r = client.post("/v1/artists", json={"name": "late"}, headers=AS_ADMIN)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert client.get("/healthz").status_code == 200  # reads go on
    assert client.post("/v1/artists", json={"name": "late"}, headers=AS_ADMIN).status_code == 201


def test_thumbnails_of_evidence(service, demo):
    res, _, out = demo
    client = service()
    r = client.post("/v1/scan", files=files_of([out / "imitations" / "imitation-of-wash-wen-0.png"]))
    work_id = r.json()["results"][0]["matches"][0]["evidence"][0]["work_id"]
    thumb = client.get(f"/v1/works/{work_id}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    assert client.get("/v1/works/999999/thumbnail").status_code == 404
    assert service(thumbnails=0).get(f"/v1/works/{work_id}/thumbnail").status_code == 404


def test_index_never_prunes_uploaded_works(calibrated_copy, demo, default_embedder):
    from mimicry import ImageBytes

    _, _, out = demo
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    name = "wash-wen"
    upload = ImageBytes("u.png", (out / "unrelated" / "photo-03.png").read_bytes())
    [wid] = ix.add_uploads(name, [upload])
    stored = next(w for w in ix.works(name) if w.id == wid)
    assert stored.origin == "upload" and stored.path.startswith(str(calibrated_copy))
    report = ix.add_folder(out / "portfolios")  # the artist's folder does not hold the upload
    assert report.removed == 0 and wid in [w.id for w in ix.works(name)]


def test_metrics_count_requests_scans_and_flags(service, demo):
    res, _, out = demo
    client = service()
    client.post("/v1/scan", files=files_of([out / "imitations" / f"imitation-of-{res.fine_tuned_artist}-0.png",
                                            out / "unrelated" / "photo-00.png"]))
    client.get("/v1/artists/nobody")
    text = client.get("/metrics").text
    assert 'mimicry_requests_total{route="/v1/scan",status="200"} 1.0' in text
    assert 'mimicry_requests_total{route="/v1/artists/{name}",status="404"} 1.0' in text
    assert "mimicry_images_scanned_total 2.0" in text and "mimicry_flags_raised_total 1.0" in text
    assert "mimicry_works 24.0" in text and "mimicry_artists 4.0" in text
    assert 'mimicry_request_seconds_count{route="/v1/scan"} 1.0' in text


def test_no_body_is_read_before_authorisation_and_streams_are_limited(service, calibrated_copy):
    client = service(request_files=3)
    many = [("files", (f"{i}.png", png(), "image/png")) for i in range(50)]
    assert client.post("/v1/artists/someone/works", files=many).status_code == 401  # not 413: never parsed
    r = client.post("/v1/artists", content=b"not json at all", headers=AS_ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input"

    def chunks():  # no Content-Length: counted as it streams
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(20):
            yield b"0" * 1000

    client = service(request_bytes=10_000)
    r = client.post("/v1/scan", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_errors_never_show_server_paths(service, calibrated_copy, demo):
    _, _, out = demo
    client = service(scan_token="s3cret", write_wait_s=0.2)  # the held lock's 503 below, sooner
    scan = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/artists").status_code == 401  # reads need the scan token too
    work = StyleIndex.open(calibrated_copy).works()[0]
    moved = Path(work.path).with_suffix(".moved")
    Path(work.path).rename(moved)
    try:
        r = client.get(f"/v1/works/{work.id}/thumbnail", headers=scan)
        assert r.status_code == 404 and str(out) not in r.text and work.path not in r.text
    finally:
        moved.rename(work.path)
    holder = StyleIndex.open(calibrated_copy)
    with holder.store.writer():
        r = client.post("/v1/artists", json={"name": "x"}, headers=AS_ADMIN)
    assert r.status_code == 503 and str(calibrated_copy) not in r.text


def test_requests_with_images_beyond_the_inflight_cap_answer_503(service, demo):
    _, _, out = demo
    client = service(inflight=1)
    photo = files_of([out / "unrelated" / "photo-04.png"])
    assert client.post("/v1/scan", files=photo).status_code == 200  # the slot is given back
    slot = client.app.state.inflight
    assert slot.acquire(blocking=False)  # another request holds the only slot
    try:
        r = client.post("/v1/scan", files=photo)
        assert r.status_code == 503 and r.json()["error"]["code"] == "busy" and r.headers["Retry-After"]
        assert client.get("/healthz").status_code == 200  # requests without images go on
    finally:
        slot.release()
    assert client.post("/v1/scan", files=photo).status_code == 200
    r = client.post("/v1/scan", files=[("files", ("x.txt", b"hello", "text/plain"))])
    assert r.status_code == 422 and client.post("/v1/scan", files=photo).status_code == 200  # freed on errors too


def test_scan_and_scan_model_answer_html_reports_on_request(service, demo):
    """``Accept: text/html`` gets the same report the CLI writes: uploads and
    works embedded, no server path; thumbnails off shows no work image; JSON
    stays the default."""
    res, _, out = demo
    target = res.fine_tuned_artist
    files = files_of([out / "imitations" / f"imitation-of-{target}-1.png"])
    client = service()
    r = client.post("/v1/scan", files=files, headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert f"Flagged as <strong>{target}</strong>" in html and "POST /v1/scan (1 images)" in html
    assert html.count("<img ") == 1 + 3 and str(out) not in html and "/tmp" not in html
    assert client.post("/v1/scan", files=files).json()["results"][0]["artist"] == target
    r = client.post("/v1/scan", files=files, headers={"Accept": "application/json, text/html"})
    assert r.json()["results"][0]["artist"] == target  # JSON first: JSON

    no_thumbs = service(thumbnails=False)
    html = no_thumbs.post("/v1/scan", files=files, headers={"Accept": "text/html"}).text
    assert html.count("<img ") == 1 and "image not shown" in html  # the upload only

    samples = files_of(sorted((out / "samples-fine-tune").glob("*.png")))
    r = client.post("/v1/scan-model", files=samples, headers={"Accept": "text/html"})
    assert r.status_code == 200 and f"Imitates <strong>{target}</strong>" in r.text
    assert r.text.count('class="sample"') == len(samples) and str(out) not in r.text


def test_model_report_matches_uploads_by_position_not_name(service, demo):
    """Browsers often name every part ``blob``: each sample still shows its own image."""
    _, _, out = demo
    paths = sorted((out / "samples-fine-tune").glob("*.png"))
    files = [("files", ("blob", p.read_bytes(), "image/png")) for p in paths]
    r = service().post("/v1/scan-model", files=files, headers={"Accept": "text/html"})
    assert r.status_code == 200
    import re

    grid = r.text.split('<ul class="grid samples">')[1].split("</ul>")[0]
    thumbs = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', grid)
    assert len(thumbs) == len(paths) and len(set(thumbs)) == len(paths)  # one distinct image each
