"""The service under hostile or careless clients: bounded integers, whole-name
checks, short error bodies, no token in a log, guarded operations routes,
request ids, and no empty folders left by deletes."""

from __future__ import annotations

import logging
import re

import pytest

pytest.importorskip("fastapi")

from helpers import ADMIN, AS_ADMIN, client_with  # noqa: E402
from mimicry.errors import InputError  # noqa: E402
from mimicry.registry import check_name  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402

SCAN = "scan-secret"
AS_SCANNER = {"Authorization": f"Bearer {SCAN}"}
BIG = 2**63


def photo(demo, i: int = 0) -> list:
    _, _, out = demo
    path = out / "unrelated" / f"photo-0{i}.png"
    return [("files", (path.name, path.read_bytes(), "image/png"))]


def test_out_of_range_integers_are_400_never_500(index):
    client = client_with(index)
    for query in (f"after={BIG}", "after=-1", f"limit={BIG}", "limit=-1", f"after={10**30}"):
        r = client.get(f"/v1/audit?{query}", headers=AS_ADMIN)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input", (query, r.text)
    assert client.get(f"/v1/audit?after={BIG - 1}", headers=AS_ADMIN).json()["entries"] == []
    assert client.get(f"/v1/works/{BIG}/thumbnail").status_code == 400
    assert client.get(f"/v1/works/{BIG - 1}/thumbnail").status_code == 404
    name = index.info().artists and next(iter(index.info().artists))
    assert client.delete(f"/v1/artists/{name}/works/{BIG}", headers=AS_ADMIN).status_code == 400


def test_artist_names_are_matched_whole_and_unique_in_any_case(index):
    with pytest.raises(InputError):
        check_name("titian\n")
    client = client_with(index)
    r = client.post("/v1/artists", json={"name": "titian\n"}, headers=AS_ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input"
    assert client.post("/v1/artists", json={"name": "alice-test"}, headers=AS_ADMIN).status_code == 201
    for other in ("ALICE-TEST", "Alice-Test"):
        r = client.post("/v1/artists", json={"name": other}, headers=AS_ADMIN)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    names = [a["name"] for a in client.get("/v1/artists").json()["artists"]]
    assert names.count("alice-test") == 1 and "ALICE-TEST" not in names


def test_errors_echo_at_most_200_characters_of_the_input(index):
    client = client_with(index)
    huge = "x" * 5_000_000
    r = client.post("/v1/artists", json={"name": huge}, headers=AS_ADMIN)
    assert r.status_code == 400 and len(r.content) < 4096
    assert "x" * 200 in r.text and "x" * 201 not in r.text and "5000000 characters" in r.text
    long = "y" * 20_000
    for method, path in (("GET", f"/v1/artists/{long}"), ("DELETE", f"/v1/artists/{long}"),
                         ("POST", f"/v1/artists/{long}/token")):
        r = client.request(method, path, headers=AS_ADMIN)
        assert r.status_code == 404 and len(r.content) < 4096 and "y" * 201 not in r.text, (method, r.text[:300])
    r = client.post(f"/v1/artists/{long}/works", files=[("files", ("z" * 5000 + ".png", b"not an image"))],
                    headers=AS_ADMIN)
    assert r.status_code in (400, 404) and len(r.content) < 4096 and "z" * 201 not in r.text, r.text[:300]


def test_a_query_string_token_is_refused_and_never_logged(index, caplog):
    client = client_with(index)
    with caplog.at_level(logging.INFO, logger="mimicry.http.access"):
        r = client.get(f"/v1/audit?token={ADMIN}&after=0")
    assert r.status_code == 401
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "mimicry.http.access"]
    assert any(line.startswith("GET /v1/audit 401") for line in lines), lines
    assert ADMIN not in caplog.text and "token=" not in caplog.text


def test_serve_turns_off_uvicorns_access_log(monkeypatch, calibrated_copy):
    import torch
    import uvicorn

    from mimicry.faces.http import serve

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    serve(calibrated_copy, get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN, "MIMICRY_DEVICE": "cpu"}),
          "127.0.0.1", 8000)
    assert seen["access_log"] is False
    assert seen["log_config"]["loggers"]["mimicry"]["handlers"]  # the app's own access log is printed


def test_a_scan_token_guards_health_details_metrics_and_the_api_description(index):
    client = client_with(index, {"MIMICRY_SCAN_TOKEN": SCAN})
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
    for who in (AS_SCANNER, AS_ADMIN):
        assert client.get("/healthz", headers=who).json()["works"] == 24
    for path in ("/metrics", "/docs", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
        for who in (AS_SCANNER, AS_ADMIN):
            assert client.get(path, headers=who).status_code == 200, path
    open_ = client_with(index)
    assert open_.get("/healthz").json()["works"] == 24
    assert all(open_.get(p).status_code == 200 for p in ("/metrics", "/docs", "/openapi.json"))


def test_every_response_carries_its_request_id_and_so_do_its_log_lines(index, demo, caplog):
    client = client_with(index, {"MIMICRY_REQUEST_BYTES": "1000"})
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    for bad in ("has space", "x" * 65, "semi;colon"):
        rid = client.get("/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid), bad
    for r in (client.get("/nowhere"), client.get("/v1/audit"), client.post("/v1/scan", files=photo(demo))):
        assert r.status_code in (401, 404, 413) and re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    with caplog.at_level(logging.INFO, logger="mimicry.http.access"):
        r = client.post("/v1/artists", json={"name": "ided"}, headers=AS_ADMIN)
    rid = r.headers["x-request-id"]
    assert any(rid in rec.getMessage() for rec in caplog.records if rec.name == "mimicry.http.access")
    entries = client.get("/v1/audit", headers=AS_ADMIN).json()["entries"]
    assert entries[-1]["action"] == "register_artist" and entries[-1]["request_id"] == rid
    assert client.get("/healthz").headers["x-request-id"] != rid


def test_deletes_leave_no_empty_folders_under_works(index, demo):
    client = client_with(index)
    works = index.folder / "works"

    def empty_folders() -> list:
        return [p for p in works.rglob("*") if p.is_dir() and not any(p.iterdir())]

    assert client.post("/v1/artists", json={"name": "leaver"}, headers=AS_ADMIN).status_code == 201
    ids = client.post("/v1/artists/leaver/works", files=photo(demo, 0) + photo(demo, 1),
                      headers=AS_ADMIN).json()["works"]
    assert len(list(works.rglob("*.png"))) == 2
    assert client.delete(f"/v1/artists/leaver/works/{ids[0]}", headers=AS_ADMIN).status_code == 200
    assert len(list(works.rglob("*.png"))) == 1 and empty_folders() == []
    assert client.delete("/v1/artists/leaver", headers=AS_ADMIN).status_code == 200
    assert list(works.rglob("*.png")) == [] and empty_folders() == []
