"""The web pages over a real hub (the demo's calibrated index with a flagged
upload recorded): sign-in by token, the session cookie (signed, HttpOnly,
SameSite=Strict, 12 hours, checked server-side), CSRF on every form, and the
same authorisation rules as the API, tried from the pages."""

from __future__ import annotations

import json

import io
import os
import re
import time
from dataclasses import replace

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mimicry import ImageBytes  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.faces.web import session as sessions  # noqa: E402
from mimicry.moderation import cases, moderators  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402
from webhub import ADMIN, MODEL_ID, UPLOAD_ID, UPLOADER, csrf_of, make_hub, painting, sign_in  # noqa: E402


@pytest.fixture
def hub(calibrated_copy, demo, default_embedder):
    return make_hub(calibrated_copy, demo, default_embedder)


def client_of(hub, **kwargs) -> TestClient:
    settings = replace(get_settings({}), admin_token=ADMIN)
    return TestClient(create_app(hub.index, settings, **kwargs), raise_server_exceptions=False)


def signed_in(hub, token: str, **kwargs) -> TestClient:
    client = client_of(hub, **kwargs)
    assert sign_in(client, token).status_code == 303
    return client


def test_without_a_session_every_page_but_sign_in_goes_to_it(hub):
    client = client_of(hub)
    for path in ("/cases", f"/cases/{hub.case}", "/artist", f"/cases/{hub.case}/images/0", "/works/0/image"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", path
    r = client.post(f"/cases/{hub.case}/decision", data={"decision": "confirm"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert cases.get_case(hub.mdb, hub.case).state == "open"
    page = client.get("/")
    assert page.status_code == 200 and 'name="token"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_sign_in_sets_a_signed_strict_http_only_cookie_for_12_hours(hub):
    client = client_of(hub)
    pre = client.get("/").headers["set-cookie"].lower()
    assert "httponly" in pre and "samesite=strict" in pre
    r = sign_in(client, hub.moderator)
    assert r.status_code == 303 and r.headers["location"] == "/cases"
    cookie = r.headers["set-cookie"]
    attrs = cookie.lower()
    assert cookie.startswith(f"{sessions.COOKIE}=") and "httponly" in attrs and "samesite=strict" in attrs
    assert "max-age=43200" in attrs and "path=/" in attrs
    assert hub.moderator not in cookie  # the token itself never goes into the cookie
    secret = hub.folder / sessions.SECRET_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    assert client.get("/cases").status_code == 200
    # Another app over the same folder reads the same secret: the session holds.
    other = client_of(hub)
    other.cookies.set(sessions.COOKIE, client.cookies[sessions.COOKIE])
    assert other.get("/cases").status_code == 200


def test_sign_in_refuses_a_wrong_token_and_a_form_without_its_csrf_token(hub):
    client = client_of(hub)
    r = sign_in(client, "not-a-token")
    assert r.status_code == 401 and "belongs to no admin" in r.text and sessions.COOKIE not in r.headers.get("set-cookie", "")
    client.get("/")
    r = client.post("/signin", data={"token": hub.moderator}, follow_redirects=False)
    assert r.status_code == 403 and "did not come from this site" in r.text
    r = client.post("/signin", data={"token": hub.moderator, "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    fresh = client_of(hub)  # a form token without its cookie (another browser's) is refused too
    r = fresh.post("/signin", data={"token": hub.moderator, "csrf": csrf_of(client.get("/").text)},
                   follow_redirects=False)
    assert r.status_code == 403


def test_the_queue_shows_the_flagged_upload_with_its_tier_and_age_and_filters(hub):
    client = signed_in(hub, hub.moderator)
    page = client.get("/cases").text
    assert f'href="/cases/{hub.case}"' in page and 'data-tier="flagged"' in page
    assert hub.flagged_artist in page and re.search(r"opened (just now|\d+ min ago)", page)
    assert UPLOAD_ID not in page and UPLOADER not in page
    assert f'/cases/{hub.case}"' not in client.get("/cases?state=confirmed").text
    assert f'/cases/{hub.case}"' in client.get(f"/cases?state=all&artist={hub.flagged_artist}&tier=flagged").text
    assert f'/cases/{hub.case}"' not in client.get("/cases?tier=review").text
    bad = client.get("/cases?tier=severe")
    assert bad.status_code == 400 and "severe" in bad.text


def test_a_case_shows_the_upload_beside_its_nearest_works_and_the_verdicts_words(hub):
    client = signed_in(hub, hub.moderator)
    page = client.get(f"/cases/{hub.case}").text
    assert f"FLAGGED: imitates {hub.flagged_artist}" in page and "Not flagged at" in page
    assert UPLOAD_ID in page and UPLOADER in page
    previews = re.findall(rf'src="(/cases/{hub.case}/images/\d+)"', page)
    works = re.findall(r'src="(/works/\d+/image)"', page)
    assert len(previews) == 3 and len(works) >= 2 and 'class="zoom"' in page
    for url in previews[:1] + works[:1]:
        r = client.get(url)
        picture = Image.open(io.BytesIO(r.content))
        assert r.status_code == 200 and r.headers["content-type"] == f"image/{picture.format.lower()}"
        assert picture.size == (256, 256)  # the demo's images, whole (a small PNG is its own preview)
    assert client.get(f"/cases/{hub.case}/images/9").status_code == 404
    assert client.get("/cases/999").status_code == 404
    assert not re.search(r'(src|href|action)="(https?:)?//', page) and "<script" not in page


def test_work_pictures_are_large_enough_to_compare_brushwork(hub):
    ids = hub.index.add_uploads(hub.artist, [ImageBytes("big.png", painting(0, (1100, 800)))])
    client = signed_in(hub, hub.moderator)
    big = Image.open(io.BytesIO(client.get(f"/works/{ids[0]}/image").content))
    assert max(big.size) == 1024
    small = Image.open(io.BytesIO(client.get(f"/works/{ids[0]}/thumb").content))
    assert max(small.size) == 256


def test_a_decision_needs_the_csrf_token_and_lands_in_the_case_and_the_audit_log(hub):
    client = signed_in(hub, hub.moderator)
    url = f"/cases/{hub.case}/decision"
    r = client.post(url, data={"decision": "confirm", "note": "same brushwork"}, follow_redirects=False)
    assert r.status_code == 403 and cases.get_case(hub.mdb, hub.case).state == "open"
    token = csrf_of(client.get(f"/cases/{hub.case}").text)
    assert client.post(url, data={"decision": "ban", "csrf": token}).status_code == 400
    r = client.post(url, data={"decision": "confirm", "note": "same brushwork", "csrf": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{hub.case}?done=confirm"
    case = cases.get_case(hub.mdb, hub.case)
    assert case.state == "confirmed" and [(d.moderator, d.decision, d.note) for d in case.decisions] == [
        ("Mo Derator", "confirm", "same brushwork")]
    entry = hub.index.audit(0, 1000)[-1]
    assert (entry.actor, entry.action, entry.target, json.loads(entry.detail)) == (
        "moderator", "decide_case", f"case:{hub.case}",
        {"decision": "confirm", "state": "confirmed", "moderator": "Mo Derator"})  # as the API writes it
    page = client.get(r.headers["location"]).text
    assert "Confirmed." in page and 'data-state="confirmed"' in page and "same brushwork" in page


def test_an_artist_cannot_see_or_decide_cases_and_sees_only_their_own_works(hub):
    client = signed_in(hub, hub.artist_token)
    for path in ("/cases", f"/cases/{hub.case}", f"/cases/{hub.case}/images/0"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 403 and "for moderators" in r.text, path
    token = csrf_of(client.get("/artist").text)
    r = client.post(f"/cases/{hub.case}/decision", data={"decision": "dismiss", "csrf": token})
    assert r.status_code == 403 and cases.get_case(hub.mdb, hub.case).state == "open"
    someone_elses = next(w.id for w in hub.index.works() if w.artist != hub.artist)
    assert client.get(f"/works/{someone_elses}/image").status_code == 403


def test_the_artist_page_lists_cases_about_their_style_without_uploader_or_ids(hub, calibrated_copy, demo,
                                                                               default_embedder):
    name = hub.flagged_artist  # a demo artist: give them a token, as the admin would
    token = hub.index.rotate_token(name)
    page = signed_in(hub, token).get("/artist").text
    assert f'data-case="{hub.case}"' in page and "flagged" in page
    for secret in (UPLOAD_ID, UPLOADER, MODEL_ID, "req-web-1", "/cases/"):
        assert secret not in page
    other = signed_in(hub, hub.artist_token).get("/artist").text
    assert f'data-case="{hub.case}"' not in other


def test_the_artist_page_pages_through_every_case_about_them(hub):
    import re

    from mimicry.faces.web.artist import CASES_PAGE

    name = hub.artist
    with hub.mdb.transaction() as db:
        made = []
        for i in range(CASES_PAGE + 30):
            scan = db.execute("INSERT INTO scans(at, kind, tier, result) VALUES(0, 'image', 'flagged', '{}')"
                              ).lastrowid
            made.append(cases.open_case(db, "upload", f"page-{i}", scan, "flagged", [name])[0])
    client = signed_in(hub, hub.artist_token)
    seen, url, pages = [], "/artist", 0
    while url:
        page = client.get(url).text
        seen += [int(c) for c in re.findall(r'data-case="(\d+)"', page)]
        older = re.search(r'href="(/artist\?after=\d+)#cases-h">Older cases', page)
        url, pages = (older.group(1) if older else None), pages + 1
        assert (pages > 1) == ("Newest cases" in page)
    assert pages == 2 and seen == sorted(seen, reverse=True) and set(made) <= set(seen) and len(set(seen)) == len(seen)


def test_a_moderator_or_the_admin_cannot_use_the_artist_page(hub):
    for token in (hub.moderator, ADMIN):
        client = signed_in(hub, token)
        assert client.get("/artist").status_code == 403
        token_ = csrf_of(client.get("/cases").text)
        r = client.post("/artist/works", data={"csrf": token_}, files=[("files", ("a.png", painting(1), "image/png"))])
        assert r.status_code == 403 and "for artists" in r.text
    assert hub.index.works(hub.artist) == []


def test_a_forged_expired_or_revoked_session_is_no_session(hub):
    client = signed_in(hub, hub.moderator)
    value = client.cookies[sessions.COOKIE]
    body, sig = value.split(".")
    secret = sessions.load_secret(hub.folder)
    forged_body = sessions._b64(sessions._unb64(body).replace(b'"moderator"', b'"admin"'))
    expired, _ = sessions.issue(secret, sessions.Who("moderator", "Mo Derator"), hub.moderator,
                                now=time.time() - sessions.LIFETIME_S - 1)
    other_key, _ = sessions.issue(b"x" * 64, sessions.Who("admin", "admin"), ADMIN)
    for bad in (f"{forged_body}.{sig}", expired, other_key, "garbage", value + "x"):
        fresh = client_of(hub)
        fresh.cookies.set(sessions.COOKIE, bad)
        r = fresh.get("/cases", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", bad
    moderators.revoke(hub.mdb, "Mo Derator")
    assert client.get("/cases", follow_redirects=False).status_code == 303


def test_an_artist_uploads_removes_and_withdraws_from_the_page(hub):
    client = signed_in(hub, hub.artist_token)
    page = client.get("/artist").text
    assert "0 registered works" in page
    files = [("files", ("one.png", painting(2), "image/png")), ("files", ("two.png", painting(3), "image/png"))]
    r = client.post("/artist/works", files=files, data={"csrf": "wrong"})
    assert r.status_code == 403 and hub.index.works(hub.artist) == []
    r = client.post("/artist/works", files=files, data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/artist?done=added&n=2"
    ids = sorted(w.id for w in hub.index.works(hub.artist))
    page = client.get(r.headers["location"]).text
    assert len(ids) == 2 and "Added 2 works." in page and all(f'src="/works/{i}/thumb"' in page for i in ids)
    assert client.get(f"/works/{ids[0]}/image").status_code == 200
    bad = client.post("/artist/works", files=[("files", ("x.png", b"not an image", "image/png"))],
                      data={"csrf": csrf_of(page)})
    assert bad.status_code == 415 and "not an image type" in bad.text
    sha = next(w.sha256 for w in hub.index.works(hub.artist) if w.id == ids[0])
    assert len(list((hub.folder / "thumbnails").glob(f"{sha}-*.jpg"))) == 2  # 256 and 1024 px
    r = client.post(f"/artist/works/{ids[0]}/remove", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and [w.id for w in hub.index.works(hub.artist)] == ids[1:]
    assert list((hub.folder / "thumbnails").glob(f"{sha}-*.jpg")) == []  # a removed work leaves no picture
    assert client.post("/artist/withdraw", data={"csrf": csrf_of(page)}).status_code == 400
    r = client.post("/artist/withdraw", data={"csrf": csrf_of(page), "confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?note=withdrawn"
    assert hub.artist not in hub.index.info().artists
    # the old cookie no longer names a registered artist's token: no session
    stale = client_of(hub)
    stale.cookies.set(sessions.COOKIE, client.cookies.get(sessions.COOKIE) or "")
    assert stale.get("/artist", follow_redirects=False).status_code == 303


def test_a_read_only_service_shows_the_artist_page_but_refuses_its_writes(hub):
    client = signed_in(hub, hub.artist_token, writes=False)
    page = client.get("/artist").text
    assert "read-only" in page and 'action="/artist/works"' not in page
    r = client.post("/artist/works", data={"csrf": csrf_of(page)}, files=[("files", ("a.png", painting(4), "image/png"))])
    assert r.status_code == 403 and hub.index.works(hub.artist) == []
    moderator = signed_in(hub, hub.moderator, writes=False)  # decisions write the moderation database only
    token = csrf_of(moderator.get(f"/cases/{hub.case}").text)
    assert moderator.post(f"/cases/{hub.case}/decision", data={"decision": "escalate", "csrf": token}).status_code == 200
    assert cases.get_case(hub.mdb, hub.case).state == "escalated"


def test_sign_out_ends_the_session(hub):
    client = signed_in(hub, hub.moderator)
    token = csrf_of(client.get("/cases").text)
    r = client.post("/signout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and "max-age=0" in r.headers["set-cookie"].lower()
    assert client.get("/cases", follow_redirects=False).status_code == 303


def test_the_secret_is_made_once_with_mode_0600(tmp_path):
    a = sessions.load_secret(tmp_path)
    assert sessions.load_secret(tmp_path) == a and len(a) == 64
    assert os.stat(tmp_path / sessions.SECRET_FILE).st_mode & 0o777 == 0o600
    # A folder the secret cannot be written to: a secret for this process only.
    gone = tmp_path / "not-there"
    assert len(sessions.load_secret(gone)) == 64 and sessions.load_secret(gone) != sessions.load_secret(gone)
    assert not gone.exists()
    # An empty or short file (a kill in the middle of an older write) is no secret: it is made again.
    for damaged in (b"", b"abc"):
        (tmp_path / sessions.SECRET_FILE).write_bytes(damaged)
        fresh = sessions.load_secret(tmp_path)
        assert len(fresh) == 64 and fresh != a and (tmp_path / sessions.SECRET_FILE).read_bytes() == fresh
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_model_case_shows_its_supporting_samples_beside_their_works(calibrated_copy, demo, default_embedder):
    hub = make_hub(calibrated_copy, demo, default_embedder, model=True)
    assert hub.model_case is not None
    client = signed_in(hub, ADMIN)
    page = client.get(f"/cases/{hub.model_case}").text
    assert "Imitates" in page or "Review for" in page
    assert re.search(rf'src="/cases/{hub.model_case}/images/\d+"', page) and 'src="/works/' in page
    assert MODEL_ID in page and UPLOADER in page  # a moderator sees the hub's ids, to act on them
