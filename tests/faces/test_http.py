"""The service's structure: the app leaves a given index as it is, every limit
comes from :class:`~mimicry.settings.Settings`, and the in-flight and model
slots are held for the request and given back however it ends."""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import replace

import pytest
from PIL import Image

pytest.importorskip("fastapi")

from helpers import AS_ADMIN, client_with  # noqa: E402
from mimicry import StyleIndex  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402


def png(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def photo(demo, i: int = 0) -> list:
    _, _, out = demo
    path = out / "unrelated" / f"photo-0{i}.png"
    return [("files", (path.name, path.read_bytes(), "image/png"))]


def test_create_app_leaves_the_given_index_as_it_is(index, demo):
    ix_before, store_before = dict(vars(index)), dict(vars(index.store))
    client = client_with(index)
    own = client.app.state.index
    assert own is not index and own.store is not index.store and own.folder == index.folder
    assert own.store.ann_in_background  # the app's handle builds approximate indexes on a thread
    assert client.post("/v1/artists", json={"name": "fresh"}, headers=AS_ADMIN).status_code == 201
    assert client.post("/v1/artists/fresh/works", files=photo(demo), headers=AS_ADMIN).status_code == 201
    assert index.store.ann_in_background is False
    assert vars(index).keys() == ix_before.keys() and all(vars(index)[k] is v for k, v in ix_before.items())
    assert vars(index.store).keys() == store_before.keys()
    assert all(vars(index.store)[k] is v for k, v in store_before.items())
    assert index.info().artists["fresh"] == 1  # same folder: the caller's handle sees the app's writes


def test_audit_page_caps_every_answer(index):
    client = client_with(index, {"MIMICRY_AUDIT_PAGE": "2"})
    assert client.post("/v1/artists", json={"name": "third"}, headers=AS_ADMIN).status_code == 201
    # the demo indexed three artists, calibrated, and added the fourth (its moderation loop)
    first = client.get("/v1/audit?limit=100", headers=AS_ADMIN).json()
    assert [e["action"] for e in first["entries"]] == ["index", "calibrate"]
    rest = client.get(f"/v1/audit?after={first['next']}&limit=100", headers=AS_ADMIN).json()
    assert [e["action"] for e in rest["entries"]] == ["index", "register_artist"]
    uncapped = client_with(index).get("/v1/audit?limit=100", headers=AS_ADMIN).json()
    assert len(uncapped["entries"]) == 4


def test_thumbnail_side_sets_the_long_side(index):
    work = index.works()[0]
    sides = {}
    for side in ("64", "256"):
        r = client_with(index, {"MIMICRY_THUMBNAIL_SIDE": side}).get(f"/v1/works/{work.id}/thumbnail")
        assert r.status_code == 200
        sides[side] = max(Image.open(io.BytesIO(r.content)).size)
    assert sides == {"64": 64, "256": 256}  # the works are 256 pixels wide


def test_write_wait_is_how_long_a_write_waits_for_the_lock(index, calibrated_copy):
    holder = StyleIndex.open(calibrated_copy)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.store.writer():
            held.set()
            release.wait(10)

    for wait, status in (("0", 503), ("20", 201)):
        client = client_with(index, {"MIMICRY_WRITE_WAIT": wait})
        held.clear(), release.clear()
        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(10)
        threading.Timer(1.25, release.set).start()  # past the old fixed second
        start = time.monotonic()
        r = client.post("/v1/artists", json={"name": f"waited-{wait}"}, headers=AS_ADMIN)
        assert r.status_code == status, r.text
        assert (time.monotonic() - start < 1.0) == (status == 503)
        release.set()
        thread.join()


def test_form_limits_come_from_settings(index, demo):
    extra = [("note", (None, "x")), ("other", (None, "y")), ("third", (None, "z"))]
    assert client_with(index).post("/v1/scan", files=photo(demo) + extra).status_code == 200
    r = client_with(index, {"MIMICRY_FORM_FIELDS": "2"}).post("/v1/scan", files=photo(demo) + extra)
    assert r.status_code == 400 and "Maximum number of fields is 2" in r.json()["error"]["message"]
    big = [("note", (None, "x" * 5000))]
    assert client_with(index).post("/v1/scan", files=photo(demo) + big).status_code == 200
    r = client_with(index, {"MIMICRY_FORM_FIELD_BYTES": "1000"}).post("/v1/scan", files=photo(demo) + big)
    assert r.status_code == 400 and "maximum size" in r.json()["error"]["message"], r.text


def test_inference_slots_from_settings_unless_given(index, demo):
    assert client_with(index, {"MIMICRY_INFERENCE_SLOTS": "3"}).app.state.service.inference_slots == 3
    assert client_with(index, {"MIMICRY_INFERENCE_SLOTS": "3"},
                       inference_slots=2).app.state.service.inference_slots == 2
    assert client_with(index).app.state.service.inference_slots == (os.cpu_count() or 1)
    client = client_with(index, {"MIMICRY_INFERENCE_SLOTS": "1"})
    svc = client.app.state.service
    seen = []

    def scan(images):  # the model call holds the only slot
        from mimicry.results import ScanResult

        seen.append(svc.inference.acquire(blocking=False))
        return [ScanResult(i.name, []) for i in images]

    svc.index.scan = scan
    assert client.post("/v1/scan", files=photo(demo)).json()["results"][0]["matches"] == []
    assert seen == [False] and svc.inference.acquire(blocking=False)  # held during the call, then free


def test_the_inflight_slot_is_held_for_the_request_and_freed_on_any_error(index, demo):
    client = client_with(index, {"MIMICRY_INFLIGHT": "1"})
    slot, svc = client.app.state.inflight, client.app.state.service

    def free() -> bool:
        if slot.acquire(blocking=False):
            slot.release()
            return True
        return False

    r = client_with(index, {"MIMICRY_INFLIGHT": "1", "MIMICRY_MIN_SAMPLES": "1", "MIMICRY_MAX_SAMPLES": "2"}).post(
        "/v1/scan-model", files=photo(demo) * 3)  # refused by the route, after the uploads
    assert r.status_code == 400 and free()
    held = []

    def scan(images):
        held.append(not free())
        raise RuntimeError("boom")  # not a MimicryError: a 500

    svc.index.scan = scan
    assert client.post("/v1/scan", files=photo(demo)).status_code == 500
    assert held == [True] and free()
    r = client.post("/v1/artists/wash-wen/works", files=[("files", ("x.png", png((8, 8))[:20], "image/png"))],
                    headers=AS_ADMIN)
    assert r.status_code == 422 and free()  # a truncated image, refused by its header


def test_settings_left_alone_keep_the_former_limits():
    s = get_settings({})
    assert (s.write_wait_s, s.form_fields, s.form_field_bytes, s.audit_page, s.thumbnail_side,
            s.inference_slots) == (1.0, 16, 1024 * 1024, 1000, 256, 0)
    assert replace(s, audit_page=5).audit_page == 5
