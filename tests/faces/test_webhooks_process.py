"""Webhooks against SIGKILL: ``mimicry serve`` is killed at random moments
while events are being committed and sent to a receiver on loopback, and
started again; afterwards every committed event has arrived, an event that
arrived twice came with the same id and body, every registration is
announced, and every acknowledged scan is in the history."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter

import pytest

httpx = pytest.importorskip("httpx")

from helpers import serve  # noqa: E402
from mimicry.moderation import cases  # noqa: E402
from mimicry.moderation.db import ModerationDB  # noqa: E402
from receiver import Receiver  # noqa: E402

pytestmark = pytest.mark.slow

TRIALS = 20
FAST = {"MIMICRY_WEBHOOK_RETRY": "0.05", "MIMICRY_WEBHOOK_RETRY_MAX": "0.5", "MIMICRY_WEBHOOK_POLL": "0.2"}


def _register(url: str, trial: int, acknowledged: list[str], stop: threading.Event) -> None:
    """Registrations through the service (``artist.registered``), until it is killed."""
    i = 0
    while not stop.is_set():
        name, i = f"artist-{trial:02d}-{i:03d}", i + 1
        try:
            if httpx.post(url + "/v1/artists", json={"name": name}, timeout=5).status_code == 201:
                acknowledged.append(name)
        except httpx.TransportError:
            return


def _scan(url: str, image: bytes, trial: int, acknowledged: list[int], stop: threading.Event) -> None:
    """Scans that record history and open cases (``case.opened``), until the service is killed."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            r = httpx.post(url + "/v1/scan", data={"upload_id": f"u-{trial}-{i}"}, timeout=30,
                           files=[("files", ("x.png", image, "image/png"))])
        except httpx.TransportError:
            return
        if r.status_code == 200 and r.json().get("history"):
            acknowledged.append(r.json()["history"]["scan"])


def _cases(folder, trial: int, stop: threading.Event) -> None:
    """Cases opened and decided by another process writing the same moderation
    database (as the CLI or a sidecar would): ``case.opened`` and ``case.decided``."""
    mdb = ModerationDB(folder)
    i = 0
    while not stop.is_set():
        i += 1
        with mdb.transaction() as db:
            scan = db.execute("INSERT INTO scans(at, kind, tier, result) VALUES(?, 'image', 'flagged', '{}')",
                              (time.time(),)).lastrowid
            case_id, _ = cases.open_case(db, "upload", f"side-{trial}-{i}", scan, "flagged", ["dotwork-dora"])
        cases.decide(mdb, case_id, random.choice(["confirm", "dismiss", "escalate"]), "", "sidecar")
        time.sleep(0.02)
    mdb.close()


def _trial(folder, trial: int, rng: random.Random, image: bytes, acked: dict[str, list]) -> None:
    proc, url, _ = serve(folder, FAST)
    scanning = "history" in httpx.post(url + "/v1/scan", data={"upload_id": f"warm-{trial}"}, timeout=120,
                                       files=[("files", ("x.png", image, "image/png"))]).json()
    stop = threading.Event()
    jobs = [threading.Thread(target=_register, args=(url, trial, acked["artists"], stop)),
            threading.Thread(target=_cases, args=(folder, trial, stop))]
    if scanning:
        jobs.append(threading.Thread(target=_scan, args=(url, image, trial, acked["scans"], stop)))
    before = len(acked["artists"])
    for job in jobs:
        job.start()
    deadline = time.monotonic() + 60  # the kill lands mid-stream: after this trial's first registration
    while len(acked["artists"]) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.05, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for job in jobs:
        job.join()
    acked["scanning"].append(scanning)


def test_every_committed_event_arrives_through_sigkills(demo, calibrated_copy):
    folder = calibrated_copy
    _, _, out = demo
    image = next(p for p in sorted((out / "imitations").rglob("*")) if p.is_file()).read_bytes()
    receiver = Receiver()
    proc, url, _ = serve(folder, FAST)
    try:
        receiver.secret = httpx.post(url + "/v1/webhooks", json={"url": receiver.url}, timeout=10).json()["secret"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rng = random.Random(0)
    acked: dict[str, list] = {"artists": [], "scans": [], "scanning": []}
    try:
        for trial in range(TRIALS):
            _trial(folder, trial, rng, image, acked)
        mdb = ModerationDB(folder)
        committed = {r[0] for r in mdb.read("SELECT id FROM events")}
        proc, url, _ = serve(folder, FAST)  # once more: what is left is sent
        try:
            start = time.monotonic()
            receiver.wait_for(lambda r: committed <= r.ids, timeout=120)
            drained = time.monotonic() - start
            committed = {r[0] for r in mdb.read("SELECT id FROM events")}  # this start announced some
            receiver.wait_for(lambda r: committed <= r.ids, timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        receiver.close()
    _check(mdb, receiver, committed, acked)
    types = Counter(t for (t,) in mdb.read("SELECT type FROM events"))
    print(f"\n{TRIALS} trials: {len(committed)} events committed ({dict(types)}), {len(receiver.events)} arrivals, "
          f"{len(receiver.events) - len(receiver.ids)} duplicates, {receiver.cut_short} cut short by a kill, {len(acked['artists'])} registrations and "
          f"{len(acked['scans'])} scans acknowledged; the rest arrived {drained:.1f} s after the last start")


def _check(mdb: ModerationDB, receiver: Receiver, committed: set[str], acked: dict[str, list]) -> None:
    assert receiver.bad_signatures == 0
    assert receiver.ids == committed  # every committed event arrived, and nothing else
    by_id: dict[str, set[str]] = {}
    for e in receiver.events:
        by_id.setdefault(e["id"], set()).add(json.dumps(e, sort_keys=True))
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a duplicate is the same event, same id
    what = Counter((e["type"], json.dumps(e["data"], sort_keys=True)) for e in
                   (json.loads(next(iter(b))) for b in by_id.values()))
    assert max(what.values()) == 1  # no happening announced under two ids
    announced = {json.loads(d)["artist"] for (d,) in mdb.read("SELECT data FROM events WHERE type='artist.registered'")}
    assert set(acked["artists"]) <= announced  # every acknowledged registration, announced
    from mimicry import StyleIndex

    with StyleIndex.open(mdb.folder) as ix:
        registered = {a for a in ix.info().artists if a.startswith("artist-")}
    assert registered == announced  # and those committed but never acknowledged too (announced at restart)
    decided = mdb.read("SELECT COUNT(*) FROM decisions")[0][0]
    assert decided >= TRIALS and len(acked["artists"]) >= TRIALS  # every kill landed mid-stream
    if any(acked["scanning"]):  # the service records scans: every acknowledged one is in the history
        recorded = {r[0] for r in mdb.read("SELECT id FROM scans")}
        assert set(acked["scans"]) <= recorded and acked["scans"]
        opened = {r[0] for r in mdb.read("SELECT scan_id FROM cases WHERE source='scan'")}
        assert set(acked["scans"]) <= opened  # each opened its case (and so a case.opened event)
