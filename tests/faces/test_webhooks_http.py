"""Webhooks over HTTP: admin only, on a writable service; the secret answered
once and never listed; registering an artist sends a signed
``artist.registered`` through the worker that runs with the app."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.moderation.delivery import Deliverer  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402
from receiver import Receiver  # noqa: E402

ADMIN = "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
FAST = {"MIMICRY_WEBHOOK_RETRY": "0.05", "MIMICRY_WEBHOOK_RETRY_MAX": "0.2", "MIMICRY_WEBHOOK_POLL": "0.5"}


@pytest.fixture
def folder(tmp_path, portfolio_of):
    folder = tmp_path / "ix"
    StyleIndex.create(folder, device="cpu").add_folder(portfolio_of(tmp_path / "p", 1, 1))
    return folder


def client(folder, **kwargs) -> TestClient:
    settings = get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN, **FAST})
    return TestClient(create_app(folder, settings, **kwargs), raise_server_exceptions=False)


def test_register_list_remove_as_admin(folder):
    c = client(folder)
    r = c.post("/v1/webhooks", json={"url": "https://hub.example/hooks"}, headers=AS_ADMIN)
    assert r.status_code == 201 and set(r.json()) == {"id", "url", "secret"}
    hook = r.json()
    listed = c.get("/v1/webhooks", headers=AS_ADMIN).json()["webhooks"]
    assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0]
    assert hook["secret"] not in c.get("/v1/webhooks", headers=AS_ADMIN).text
    assert c.delete(f"/v1/webhooks/{hook['id']}", headers=AS_ADMIN).json() == {"removed": hook["id"]}
    r = c.delete(f"/v1/webhooks/{hook['id']}", headers=AS_ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body, why", [({"url": "http://hub.example/hooks"}, "loopback only"),
                                       ({"url": "ftp://x.example/"}, "https"), ({}, "url"), ({"url": 3}, "url")])
def test_a_bad_url_is_a_400_naming_the_reason(folder, body, why):
    r = client(folder).post("/v1/webhooks", json=body, headers=AS_ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input" and why in r.json()["error"]["message"]


def test_only_the_admin_manages_webhooks(folder):
    c = client(folder)
    token = c.post("/v1/artists", json={"name": "ana"}, headers=AS_ADMIN).json()["token"]
    as_artist = {"Authorization": f"Bearer {token}"}
    for method, path in (("post", "/v1/webhooks"), ("get", "/v1/webhooks"), ("delete", "/v1/webhooks/wh_1")):
        kwargs = {"json": {"url": "https://hub.example/"}} if method == "post" else {}
        assert getattr(c, method)(path, **kwargs).status_code == 401
        assert getattr(c, method)(path, headers=as_artist, **kwargs).status_code == 403
    assert c.get("/v1/webhooks", headers=AS_ADMIN).json() == {"webhooks": []}


def test_a_read_only_service_has_no_webhooks_and_no_worker(folder):
    app = create_app(folder, get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN}), writes=False)
    assert not [job for job in app.state.service.background if isinstance(job, Deliverer)]
    r = TestClient(app).get("/v1/webhooks", headers=AS_ADMIN)
    assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]


def test_registering_an_artist_sends_a_signed_event_through_the_worker(folder):
    receiver = Receiver()
    try:
        with client(folder) as c:  # the app's lifespan runs: the worker starts and stops with it
            [worker] = [job for job in c.app.state.service.background if isinstance(job, Deliverer)]
            assert worker.alive
            hook = c.post("/v1/webhooks", json={"url": receiver.url}, headers=AS_ADMIN).json()
            receiver.secret = hook["secret"]
            assert c.post("/v1/artists", json={"name": "ana"}, headers=AS_ADMIN).status_code == 201
            # the registration, and the lookback it starts (an empty history: finished at once)
            receiver.wait_for(lambda r: len(r.events) == 2, timeout=10)
            deadline = time.monotonic() + 10  # recorded as delivered just after the receiver answered
            while (listed := c.get("/v1/webhooks", headers=AS_ADMIN).json()["webhooks"][0])["delivered"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not worker.alive
    finally:
        receiver.close()
    by_type = {e["type"]: e for e in receiver.events}
    assert set(by_type) == {"artist.registered", "lookback.finished"} and len(receiver.events) == 2
    event = by_type["artist.registered"]
    assert event["data"] == {"artist": "ana"}
    assert event["id"].startswith("evt_") and isinstance(event["created"], int)
    assert by_type["lookback.finished"]["data"]["artist"] == "ana"
    assert receiver.bad_signatures == 0 and (listed["pending"], listed["delivered"]) == (0, 2)
