"""Cases over HTTP: scans recorded with the hub's ids, moderators (admin only),
the queue and a case's evidence, decisions in the audit log, what an artist
may read, the purge of an uploader, retention at start-up, and who a token is."""

from __future__ import annotations

import io
import json
import sqlite3
import time

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.errors import InputError  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.faces.http.identity import Identity, who_is  # noqa: E402
from mimicry.moderation import history  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402

ADMIN = "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_of(calibrated_copy, default_embedder):
    """``app_of(env)``: the app over a private copy of the demo index, settings from ``env``."""
    def make(env: dict[str, str] | None = None, **kwargs):
        settings = get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN, "MIMICRY_PREVIEW_SIDE": "64", **(env or {})})
        return create_app(StyleIndex.open(calibrated_copy, embedder=default_embedder), settings, **kwargs)
    return make


@pytest.fixture
def client(app_of) -> TestClient:
    return TestClient(app_of(), raise_server_exceptions=False)


def files(*paths) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def imitation(demo, artist=None, i=1):
    res, _, out = demo
    return out / "imitations" / f"imitation-of-{artist or res.fine_tuned_artist}-{i}.png"


def photo(demo, i=0):
    return demo[2] / "unrelated" / f"photo-0{i}.png"


def moderator(client, name="mia") -> str:
    r = client.post("/v1/moderators", json={"name": name}, headers=AS_ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def artist_token(client, name) -> str:
    r = client.post(f"/v1/artists/{name}/token", headers=AS_ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def other_artist(demo) -> str:
    res = demo[0]
    return next(p.name for p in sorted((demo[2] / "portfolios").iterdir()) if p.name != res.fine_tuned_artist)


def test_scans_are_recorded_with_the_hubs_ids_and_open_cases(client, demo):
    res, _, out = demo
    data = {"upload_id": "up-1", "uploader": "user-7"}
    r = client.post("/v1/scan", files=files(imitation(demo), photo(demo)), data=data)
    assert r.status_code == 200, r.text
    first = r.json()["history"]
    assert first["opened"] is True and first["case"] is not None and first["scan"] >= 1
    again = client.post("/v1/scan", files=files(imitation(demo)), data=data).json()["history"]
    assert (again["case"], again["opened"]) == (first["case"], False) and again["scan"] > first["scan"]
    quiet = client.post("/v1/scan", files=files(photo(demo)), data={"upload_id": "up-2"}).json()["history"]
    assert quiet["case"] is None and quiet["opened"] is False
    samples = sorted((out / "samples-fine-tune").glob("*.png"))
    model = client.post("/v1/scan-model", files=files(*samples), data={"model_id": "lora-9", "uploader": "user-7"})
    assert model.status_code == 200 and model.json()["history"]["opened"] is True
    mdb = client.app.state.service.moderation
    rows = mdb.read("SELECT kind, upload_id, model_id, uploader, tier FROM scans ORDER BY id")
    assert rows == [("image", "up-1", None, "user-7", "flagged"), ("image", "up-1", None, "user-7", "flagged"),
                    ("image", "up-2", None, None, "not-flagged"), ("model", None, "lora-9", "user-7", "imitates")]
    assert mdb.read("SELECT kind, key, tier, artist FROM cases ORDER BY id") == [
        ("upload", "up-1", "flagged", res.fine_tuned_artist), ("model", "lora-9", "imitates", res.fine_tuned_artist)]
    # The HTML report is recorded too.
    html = client.post("/v1/scan", files=files(photo(demo)), headers={"Accept": "text/html"})
    assert html.status_code == 200 and len(mdb.read("SELECT id FROM scans")) == 5


def test_history_off_records_nothing(app_of, demo):
    client = TestClient(app_of({"MIMICRY_HISTORY": "off"}))
    r = client.post("/v1/scan", files=files(imitation(demo)), data={"upload_id": "up-1"})
    assert r.status_code == 200 and "history" not in r.json()
    assert client.app.state.service.moderation.read("SELECT COUNT(*) FROM scans") == [(0,)]
    with pytest.raises(InputError, match="MIMICRY_HISTORY"):
        get_settings({"MIMICRY_HISTORY": "maybe"})


@pytest.mark.parametrize("data, field", [
    ({"upload_id": "x" * 201}, "upload_id"),
    ({"uploader": "line\nbreak"}, "uploader"),
    ({"model_id": "tab\there"}, "model_id"),
    ({"upload_id": ["a", "b"]}, "upload_id"),
    ({"upload_id": "scan:2"}, "upload_id"),  # would join the case of anonymous scan 2
    ({"model_id": "scan:7"}, "model_id"),
])
def test_a_bad_hub_id_is_a_400_naming_the_field(client, demo, data, field):
    r = client.post("/v1/scan", files=files(photo(demo)), data=data)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input"
    assert repr(field) in r.json()["error"]["message"]
    assert client.app.state.service.moderation.read("SELECT COUNT(*) FROM scans") == [(0,)]


def test_a_file_as_a_hub_id_is_a_400(client, demo):
    r = client.post("/v1/scan-model", files=files(photo(demo)) + [("uploader", ("u.txt", b"x", "text/plain"))])
    assert r.status_code == 400 and "'uploader'" in r.json()["error"]["message"]


def test_a_scan_that_cannot_be_recorded_is_a_503(client, demo, monkeypatch):
    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(history, "record_images", locked)
    r = client.post("/v1/scan", files=files(photo(demo)))
    assert r.status_code == 503 and r.headers["Retry-After"] and "could not be recorded" in r.text


def test_moderators_are_the_admins_to_manage(client, demo):
    token = moderator(client, "mia")
    assert client.post("/v1/moderators", json={"name": "MIA"}, headers=AS_ADMIN).status_code == 409
    assert client.post("/v1/moderators", json={"name": "bad\nname"}, headers=AS_ADMIN).status_code == 400
    assert client.post("/v1/moderators", content=b"{", headers=AS_ADMIN).status_code == 400
    listed = client.get("/v1/moderators", headers=AS_ADMIN).json()["moderators"]
    assert [m["name"] for m in listed] == ["mia"] and listed[0]["added_at"].endswith("Z")
    art = artist_token(client, demo[0].fine_tuned_artist)
    for who in (token, art):  # a moderator's or an artist's token on the admin's routes: 403
        assert client.post("/v1/moderators", json={"name": "x"}, headers=bearer(who)).status_code == 403
        assert client.get("/v1/moderators", headers=bearer(who)).status_code == 403
        assert client.delete("/v1/moderators/mia", headers=bearer(who)).status_code == 403
        assert client.delete("/v1/history?uploader=u", headers=bearer(who)).status_code == 403
    assert client.get("/v1/moderators").status_code == 401
    assert client.get("/v1/cases", headers=bearer(token)).status_code == 200
    assert client.delete("/v1/moderators/mia", headers=AS_ADMIN).json() == {"name": "mia", "revoked": True}
    assert client.delete("/v1/moderators/mia", headers=AS_ADMIN).status_code == 404
    assert client.get("/v1/cases", headers=bearer(token)).status_code == 403  # revoked at once
    actions = [(e["actor"], e["action"], e["target"]) for e in client.get("/v1/audit", headers=AS_ADMIN).json()["entries"]]
    assert ("admin", "add_moderator", "mia") in actions and ("admin", "revoke_moderator", "mia") in actions


def test_the_queue_filters_and_pages(client, demo):
    res = demo[0]
    other = other_artist(demo)
    for i, who in enumerate([res.fine_tuned_artist, other, res.fine_tuned_artist]):
        r = client.post("/v1/scan", files=files(imitation(demo, who, i % 3)), data={"upload_id": f"u{i}"})
        assert r.json()["history"]["opened"], r.text
    mod = bearer(moderator(client))
    everything = client.get("/v1/cases", headers=mod).json()
    assert [c["key"] for c in everything["cases"]] == ["u0", "u1", "u2"] and everything["next"] is None
    first = everything["cases"][0]
    assert first["state"] == "open" and first["tier"] == "flagged" and first["kind"] == "upload"
    assert first["opened_at"].endswith("Z") and first["decisions"] == []
    page = client.get("/v1/cases?limit=2", headers=mod).json()
    assert len(page["cases"]) == 2 and page["next"] == page["cases"][1]["id"]
    rest = client.get(f"/v1/cases?after={page['next']}", headers=mod).json()
    assert [c["key"] for c in rest["cases"]] == ["u2"] and rest["next"] is None
    mine = client.get(f"/v1/cases?artist={res.fine_tuned_artist}&tier=flagged&state=open", headers=mod).json()
    assert [c["key"] for c in mine["cases"]] == ["u0", "u2"]
    now = time.time()
    assert len(client.get(f"/v1/cases?since={now - 60:.0f}", headers=mod).json()["cases"]) == 3
    assert client.get("/v1/cases?since=2100-01-01T00:00:00Z", headers=mod).json()["cases"] == []
    assert client.get("/v1/cases?until=2000-01-01", headers=mod).json()["cases"] == []
    for bad, name in (("state=shut", "state"), ("tier=loud", "tier"), ("since=yesterday", "since"),
                      ("until=nan", "until"), ("after=-1", "after")):
        r = client.get(f"/v1/cases?{bad}", headers=mod)
        assert r.status_code == 400 and name in r.json()["error"]["message"], (bad, r.text)
    assert client.get("/v1/cases").status_code == 401
    assert client.get("/v1/cases", headers=bearer("not-a-token")).status_code == 403


def test_a_case_shows_its_evidence_and_previews(client, demo):
    r = client.post("/v1/scan", files=files(imitation(demo), photo(demo)), data={"upload_id": "up-1",
                                                                               "uploader": "user-7"})
    case_id = r.json()["history"]["case"]
    mod = bearer(moderator(client))
    case = client.get(f"/v1/cases/{case_id}", headers=mod).json()
    assert case["key"] == "up-1" and case["artist"] == demo[0].fine_tuned_artist
    scan = case["scan"]
    assert (scan["upload_id"], scan["uploader"], scan["kind"]) == ("up-1", "user-7", "image")
    assert [i["name"] for i in scan["images"]] == [imitation(demo).name, photo(demo).name]
    evidence = scan["result"]["results"][0]["matches"][0]["evidence"][0]
    assert evidence["thumbnail"] == f"/v1/works/{evidence['work_id']}/thumbnail"
    assert client.get(evidence["thumbnail"]).status_code == 200
    preview = client.get(scan["images"][0]["preview"], headers=mod)  # 256 px: a JPEG at most 64 px
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(preview.content)) as im:
        assert max(im.size) <= 64
    assert client.get(f"/v1/cases/{case_id}/images/9", headers=mod).status_code == 404
    assert client.get(f"/v1/cases/{case_id}/images/0").status_code == 401
    assert client.get("/v1/cases/9999", headers=mod).status_code == 404
    assert client.get(f"/v1/cases/{2**63}", headers=mod).status_code == 400


def test_decisions_move_the_case_and_are_audited(client, demo):
    case_id = client.post("/v1/scan", files=files(imitation(demo)), data={"upload_id": "up-1"}).json()["history"]["case"]
    mod = bearer(moderator(client, "mia"))
    art = bearer(artist_token(client, demo[0].fine_tuned_artist))
    url = f"/v1/cases/{case_id}/decision"
    assert client.post(url, json={"decision": "confirm"}).status_code == 401
    assert client.post(url, json={"decision": "confirm"}, headers=art).status_code == 403
    before = client.get("/v1/audit?limit=1000", headers=AS_ADMIN).json()["entries"]
    bad = client.post(url, json={"decision": "ban"}, headers=mod)
    assert bad.status_code == 400 and "confirm, dismiss or escalate" in bad.json()["error"]["message"]
    assert client.post(url, json={"decision": "confirm", "note": "x" * 2001}, headers=mod).status_code == 400
    assert client.post(url, content=b"not json", headers=mod).status_code == 400
    assert client.post("/v1/cases/9999/decision", json={"decision": "confirm"}, headers=mod).status_code == 404
    assert client.get("/v1/audit?limit=1000", headers=AS_ADMIN).json()["entries"] == before  # refused: unaudited
    r = client.post(url, json={"decision": "escalate", "note": "ask legal"}, headers={**mod, "X-Request-Id": "d-1"})
    assert r.status_code == 200 and r.json()["state"] == "escalated"
    r = client.post(url, json={"decision": "confirm"}, headers=AS_ADMIN)
    assert r.json()["state"] == "confirmed"
    assert [(d["moderator"], d["decision"], d["note"]) for d in r.json()["decisions"]] == [
        ("mia", "escalate", "ask legal"), ("admin", "confirm", "")]
    entries = [e for e in client.get("/v1/audit?limit=1000", headers=AS_ADMIN).json()["entries"]
               if e["action"] == "decide_case"]
    assert [(e["actor"], e["actor_artist"], e["target"], e["request_id"]) for e in entries] == [
        ("moderator", None, f"case:{case_id}", "d-1"), ("admin", None, f"case:{case_id}", entries[1]["request_id"])]
    assert '"moderator": "mia"' in entries[0]["detail"] and '"decision": "escalate"' in entries[0]["detail"]
    assert client.get("/v1/cases?state=confirmed", headers=mod).json()["cases"][0]["id"] == case_id


def test_an_artist_reads_only_the_cases_about_them(client, demo):
    res = demo[0]
    target, other = res.fine_tuned_artist, other_artist(demo)
    name = imitation(demo).name
    mine = client.post("/v1/scan", files=files(imitation(demo)), data={"upload_id": "secret-upload",
                                                                       "uploader": "secret-user"})
    theirs = client.post("/v1/scan", files=files(imitation(demo, other)), data={"upload_id": "u-2"})
    mine_id, theirs_id = mine.json()["history"]["case"], theirs.json()["history"]["case"]
    mod = bearer(moderator(client))
    client.post(f"/v1/cases/{mine_id}/decision", json={"decision": "confirm", "note": "by secret-user"}, headers=mod)
    art = bearer(artist_token(client, target))
    listed = client.get("/v1/cases", headers=art)
    assert [c["id"] for c in listed.json()["cases"]] == [mine_id]
    case = client.get(f"/v1/cases/{mine_id}", headers=art)
    assert case.status_code == 200 and case.json()["state"] == "confirmed"
    for hidden in ("secret-upload", "secret-user", name, "mia", '"key"', '"upload_id"', '"uploader"',
                   '"model_id"', '"request_id"', mine.json()["results"][0]["sha256"]):
        assert hidden not in case.text and hidden not in listed.text, hidden
    assert case.json()["decisions"] == [{"at": case.json()["decisions"][0]["at"], "decision": "confirm"}]
    assert case.json()["scan"]["images"][0]["name"] == "image 1"
    assert client.get(case.json()["scan"]["images"][0]["preview"], headers=art).status_code == 200
    # Another artist's case: 404, as a case that does not exist (nothing said about which cases exist).
    assert client.get(f"/v1/cases/{theirs_id}", headers=art).status_code == 404
    assert client.get(f"/v1/cases/{theirs_id}/images/0", headers=art).status_code == 404
    assert client.get(f"/v1/cases?artist={other}", headers=art).status_code == 403
    assert client.post(f"/v1/cases/{mine_id}/decision", json={"decision": "dismiss"}, headers=art).status_code == 403


def test_an_uploader_can_be_purged(client, demo):
    r = client.post("/v1/scan", files=files(imitation(demo)), data={"upload_id": "up-1", "uploader": "gone"})
    client.post("/v1/scan", files=files(photo(demo)), data={"uploader": "stays"})
    svc = client.app.state.service
    preview = svc.index.folder / history.PREVIEWS / f"{r.json()['results'][0]['sha256']}.jpg"
    assert preview.exists()
    assert client.delete("/v1/history", headers=AS_ADMIN).status_code == 400  # which uploader?
    out = client.delete("/v1/history?uploader=gone", headers=AS_ADMIN)
    assert out.json() == {"uploader": "gone", "removed": 1}
    assert svc.moderation.read("SELECT uploader FROM scans") == [("stays",)]
    assert svc.moderation.read("SELECT COUNT(*) FROM cases") == [(0,)] and not preview.exists()
    purge = [e for e in client.get("/v1/audit", headers=AS_ADMIN).json()["entries"] if e["action"] == "purge_history"]
    assert len(purge) == 1 and "gone" not in purge[0]["target"] and json.loads(purge[0]["detail"]) == {"scans": 1, "background_removed": 0}


def test_retention_runs_at_start_up_and_stops_with_the_app(app_of, demo):
    app = app_of({"MIMICRY_HISTORY_DAYS": "30"})
    svc = app.state.service
    with TestClient(app) as client:
        r = client.post("/v1/scan", files=files(imitation(demo)), data={"upload_id": "old"})
        svc.moderation.connect().execute("UPDATE scans SET at = ?", (time.time() - 31 * 86400,))
    job = svc.background[0]
    assert not job.alive and job.runs == 1  # ran at start-up (before the old scan), stopped with the app
    with TestClient(app) as client:
        for _ in range(100):
            if job.runs >= 2:
                break
            time.sleep(0.02)
        assert svc.moderation.read("SELECT COUNT(*) FROM scans") == [(0,)]
        assert client.get(f"/v1/cases/{r.json()['history']['case']}", headers=AS_ADMIN).status_code == 404
    assert not job.alive


def test_who_a_token_is(app_of, client, demo):
    svc = client.app.state.service
    mia = moderator(client, "mia")
    art = artist_token(client, demo[0].fine_tuned_artist)
    assert who_is(svc, ADMIN) == Identity("admin") and who_is(svc, ADMIN).is_admin
    assert who_is(svc, mia) == Identity("moderator", "mia") and who_is(svc, mia).moderates
    assert who_is(svc, art) == Identity("artist", demo[0].fine_tuned_artist) and not who_is(svc, art).moderates
    assert who_is(svc, "nope") == Identity("nobody") and who_is(svc, None) == Identity("nobody")
    loose = app_of(insecure_no_auth=True).state.service
    assert who_is(loose, None).role == "anonymous" and who_is(loose, None).moderates


def test_a_folder_without_a_moderation_database(app_of, monkeypatch):
    from mimicry.moderation import db

    def unwritable(self, folder):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(db.ModerationDB, "__init__", unwritable)
    with pytest.raises(InputError, match="MIMICRY_HISTORY=off"):
        app_of()
    client = TestClient(app_of({"MIMICRY_HISTORY": "off"}))
    assert client.app.state.service.moderation is None
    assert client.get("/v1/cases", headers=AS_ADMIN).status_code == 404
    assert client.get("/healthz").status_code == 200
    # the web pages too: the sign-in page answers, the queue sends you to sign in
    assert client.get("/").status_code == 200
    assert client.get("/cases", follow_redirects=False).status_code == 303


def test_a_small_png_is_its_own_preview_without_its_metadata(tmp_path):
    buf = io.BytesIO()
    info = PngInfo()
    info.add_text("GPS", "51.5N 0.1W")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG", pnginfo=info)
    data = buf.getvalue()
    assert b"51.5N" in data
    name = history.write_preview(tmp_path, "a" * 64, data, 64)
    kept = (tmp_path / history.PREVIEWS / name).read_bytes()
    assert name.endswith(".png") and b"51.5N" not in kept and b"tEXt" not in kept
    with Image.open(io.BytesIO(kept)) as im:
        assert im.size == (40, 30) and im.convert("RGB").getpixel((5, 5)) == (10, 200, 30)
    big = history.write_preview(tmp_path, "b" * 64, data, 32)  # larger than the side: reduced, as a JPEG
    with Image.open(tmp_path / history.PREVIEWS / big) as im:
        assert big.endswith(".jpg") and im.format == "JPEG" and max(im.size) == 32
    assert history.write_preview(tmp_path, "a" * 64, b"other bytes", 64) == name  # once per sha256
    assert history.png_without_metadata(data[:-20]) is None  # cut short: not a whole PNG
    assert history.write_preview(tmp_path, "c" * 64, b"\x89PNG\r\n\x1a\nbroken", 64) is None
