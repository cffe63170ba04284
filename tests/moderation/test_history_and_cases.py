"""Scan history, cases and moderators over the moderation database: a flagged
upload opens one case with its event in the same transaction, a later scan of
the same upload joins it, decisions move it, retention and purges remove every
trace (previews too)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mimicry import ImageBytes, StyleIndex
from mimicry.errors import ConflictError, InputError, NotFoundError
from mimicry.moderation import cases, history, moderators
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import HubIds


@pytest.fixture(scope="module")
def scanned(demo, default_embedder):
    """The demo's index scanned on two imitations (flagged) and a photo (not):
    (results, the uploads' bytes)."""
    _, _, out = demo
    paths = sorted((out / "imitations").glob("*.png"))[:2] + sorted((out / "unrelated").glob("*.png"))[:1]
    uploads = [p.read_bytes() for p in paths]
    ix = StyleIndex.open(out / "index", embedder=default_embedder)
    results = ix.scan([ImageBytes(p.name, b) for p, b in zip(paths, uploads)])
    return results, uploads


def _events(mdb: ModerationDB) -> list[tuple[str, dict]]:
    return [(t, json.loads(d)) for t, d in mdb.read("SELECT type, data FROM events ORDER BY rowid")]


def test_a_flagged_upload_opens_one_case_with_its_event(tmp_path, scanned):
    results, uploads = scanned
    assert results[0].artist and results[1].artist and results[2].artist is None
    assert results[0].vector.shape == (1568,) and "vector" not in results[0].to_dict()
    mdb = ModerationDB(tmp_path)
    mdb.connect().execute("INSERT INTO webhooks(id, url, secret, added_at) VALUES('w1', 'http://x', 's', 0)")
    rec = history.record_images(mdb, results, uploads, HubIds("up-1", None, "alice"), "req-1", preview_side=64)
    assert rec.opened and rec.case_id is not None
    case = cases.get_case(mdb, rec.case_id)
    assert (case.kind, case.key, case.state, case.tier) == ("upload", "up-1", "open", "flagged")
    assert set(case.artists) == {results[0].artist, results[1].artist} and case.artist in case.artists
    # every image recorded with its vector and a preview of at most 64 px
    rows = mdb.read("SELECT sha256, vector, preview, tier FROM scan_images WHERE scan_id=? ORDER BY position",
                    (rec.scan_id,))
    assert [r[0] for r in rows] == [r.sha256 for r in results]
    assert np.allclose(np.frombuffer(rows[0][1], np.float32), results[0].vector)
    assert [r[3] for r in rows] == ["flagged", "flagged", "not-flagged"]
    from PIL import Image

    with Image.open(tmp_path / history.PREVIEWS / rows[0][2]) as im:
        assert max(im.size) <= 64
    assert _events(mdb) == [("case.opened", {"case": rec.case_id, "kind": "upload", "tier": "flagged",
                                             "artists": case.artists, "source": "scan"})]
    assert mdb.read("SELECT webhook_id FROM deliveries") == [("w1",)]
    # The same upload again: the same case, no second event.
    again = history.record_images(mdb, results[:1], uploads[:1], HubIds("up-1", None, "alice"))
    assert (again.case_id, again.opened) == (rec.case_id, False) and len(_events(mdb)) == 1
    # Nothing flagged: recorded, no case.
    quiet = history.record_images(mdb, results[2:], uploads[2:], HubIds("up-2", None, "bob"))
    assert quiet.case_id is None and mdb.read("SELECT tier FROM scans WHERE id=?", (quiet.scan_id,)) == [
        ("not-flagged",)]


def test_a_scan_without_ids_is_its_own_case(tmp_path, scanned):
    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    a = history.record_images(mdb, results[:1], uploads[:1], HubIds())
    b = history.record_images(mdb, results[:1], uploads[:1], HubIds())
    assert a.case_id != b.case_id and a.opened and b.opened
    assert cases.get_case(mdb, a.case_id).key == f"scan:{a.scan_id}"


def test_decisions_move_cases_and_filters_find_them(tmp_path, scanned):
    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    ids = [history.record_images(mdb, results[:1], uploads[:1], HubIds(f"u{i}")).case_id for i in range(3)]
    artist = results[0].artist
    decided = cases.decide(mdb, ids[0], "confirm", "same brushwork", "mo", "req-9")
    assert decided.state == "confirmed" and decided.decisions[0].note == "same brushwork"
    cases.decide(mdb, ids[1], "escalate", "", "mo")
    assert [c.id for c in cases.list_cases(mdb, state="open")[0]] == [ids[2]]
    assert [c.id for c in cases.list_cases(mdb, artist=artist)[0]] == ids
    assert cases.list_cases(mdb, artist="nobody")[0] == []
    assert cases.list_cases(mdb, since=time.time() + 60)[0] == []
    page, nxt = cases.list_cases(mdb, limit=2)
    assert [c.id for c in page] == ids[:2] and nxt == ids[1]
    assert [c.id for c in cases.list_cases(mdb, after=nxt)[0]] == ids[2:]
    newest, before = cases.list_cases(mdb, limit=2, newest_first=True)
    assert [c.id for c in newest] == ids[:0:-1] and before == ids[1]
    assert [c.id for c in cases.list_cases(mdb, after=before, newest_first=True)[0]] == ids[:1]
    assert [t for t, _ in _events(mdb)].count("case.decided") == 2
    # A decided case is not reopened by a new scan of the same upload.
    again = history.record_images(mdb, results[:1], uploads[:1], HubIds("u0"))
    assert again.case_id == ids[0] and cases.get_case(mdb, ids[0]).state == "confirmed"
    with pytest.raises(InputError, match="confirm, dismiss or escalate"):
        cases.decide(mdb, ids[2], "approve", "", "mo")
    with pytest.raises(NotFoundError):
        cases.decide(mdb, 999, "confirm", "", "mo")
    with pytest.raises(InputError, match="state"):
        cases.list_cases(mdb, state="closed")


def test_retention_and_purge_leave_nothing_behind(tmp_path, scanned):
    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    old = history.record_images(mdb, results[:1], uploads[:1], HubIds("u-old", None, "alice"))
    history.record_images(mdb, results[1:2], uploads[1:2], HubIds("u-new", None, "bob"))
    history.record_images(mdb, results[2:], uploads[2:], HubIds("u-bob", None, "bob"))
    mdb.connect().execute("UPDATE scans SET at = at - 100 * 86400 WHERE id=?", (old.scan_id,))
    previews = tmp_path / history.PREVIEWS
    assert len(list(previews.iterdir())) == 3
    assert history.expire(mdb, 90) == 1
    assert mdb.read("SELECT COUNT(*) FROM cases WHERE id=?", (old.case_id,)) == [(0,)]
    assert len(list(previews.iterdir())) == 2
    assert history.purge_uploader(mdb, "bob") == 2
    assert mdb.read("SELECT COUNT(*) FROM scans") == [(0,)] and list(previews.iterdir()) == []
    assert mdb.read("SELECT COUNT(*) FROM scan_images") == [(0,)]


def test_retention_sweeps_previews_and_temporary_files_no_scan_names(tmp_path, scanned):
    import os

    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    history.record_images(mdb, results[:1], uploads[:1], HubIds("kept"))
    folder = tmp_path / history.PREVIEWS
    kept = {p.name for p in folder.iterdir()}
    stray, tmp, fresh = folder / ("f" * 64 + ".jpg"), folder / "x.tmp", folder / ("e" * 64 + ".jpg")
    for p in (stray, tmp, fresh):
        p.write_bytes(b"left by a kill")
    for p in (stray, tmp):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    history.expire(mdb, 90)
    # the named preview stays, and a fresh stray (a scan being recorded now) is left alone
    assert {p.name for p in folder.iterdir()} == kept | {fresh.name}


def test_a_purge_between_a_scans_preview_and_its_commit_does_not_leave_it_without_one(tmp_path, scanned,
                                                                                      monkeypatch):
    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    history.record_images(mdb, results[:1], uploads[:1], HubIds("u-bob", None, "bob"))
    write, purged = history.write_preview, []

    def then_purge(*args, **kwargs):  # alice's scan found bob's preview; bob is purged before it commits
        name = write(*args, **kwargs)
        if not purged:
            purged.append(history.purge_uploader(mdb, "bob"))
        return name

    monkeypatch.setattr(history, "write_preview", then_purge)
    rec = history.record_images(mdb, results[:1], uploads[:1], HubIds("u-alice", None, "alice"))
    assert purged == [1]
    (name,) = mdb.read("SELECT preview FROM scan_images WHERE scan_id=?", (rec.scan_id,))[0]
    assert (tmp_path / history.PREVIEWS / name).is_file()


def test_previews_named_by_committed_scans_survive_purges_and_sweeps_racing_them(tmp_path, scanned):
    import threading

    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    stop, errors = threading.Event(), []

    def remove() -> None:
        try:
            while not stop.is_set():
                history.purge_uploader(mdb, "bob")
                history.sweep_previews(mdb, time.time() + 1)  # every unnamed file counts as stale
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    remover = threading.Thread(target=remove)
    remover.start()
    try:
        for i in range(60):
            history.record_images(mdb, results[:1], uploads[:1], HubIds(f"b-{i}", None, "bob"))
            history.record_images(mdb, results[:1], uploads[:1], HubIds(f"a-{i}", None, "alice"))
            named = {r[0] for r in mdb.read("SELECT preview FROM scan_images i JOIN scans s ON s.id=i.scan_id "
                                            "WHERE s.uploader='alice'")}
            assert all((tmp_path / history.PREVIEWS / n).is_file() for n in named), i
    finally:
        stop.set()
        remover.join()
    assert not errors


def test_retention_drops_old_events_once_every_delivery_is_done(tmp_path, scanned):
    results, uploads = scanned
    mdb = ModerationDB(tmp_path)
    db = mdb.connect()
    db.execute("INSERT INTO webhooks(id, url, secret, added_at) VALUES('w1', 'http://x', 's', 0)")
    for key in ("a", "b", "c"):
        history.record_images(mdb, results[:1], uploads[:1], HubIds(key))
    ids = [r[0] for r in mdb.read("SELECT id FROM events ORDER BY rowid")]
    db.execute("UPDATE events SET created = created - 100 * 86400 WHERE id IN (?, ?)", ids[:2])
    db.execute("UPDATE deliveries SET delivered_at = 1 WHERE event_id = ?", (ids[0],))  # old, delivered
    # ids[1]: old but still pending; ids[2]: new and delivered
    db.execute("UPDATE deliveries SET delivered_at = 1 WHERE event_id = ?", (ids[2],))
    history.expire(mdb, 90)
    assert [r[0] for r in mdb.read("SELECT id FROM events ORDER BY rowid")] == ids[1:]


def test_model_scans_open_a_case_per_model(tmp_path, demo, default_embedder):
    _, _, out = demo
    samples = sorted((out / "samples-fine-tune").glob("*.png"))
    uploads = [p.read_bytes() for p in samples]
    ix = StyleIndex.open(out / "index", embedder=default_embedder)
    verdict = ix.scan_model([ImageBytes(p.name, b) for p, b in zip(samples, uploads)])
    tier, artists = history.model_tier(verdict)
    assert tier in ("imitates", "review") and verdict.vectors.shape[0] == verdict.n_samples
    mdb = ModerationDB(tmp_path)
    rec = history.record_model(mdb, verdict, uploads, HubIds(None, "model-7", "carol"))
    case = cases.get_case(mdb, rec.case_id)
    assert (case.kind, case.key, case.tier, case.artists) == ("model", "model-7", tier, artists)
    assert mdb.read("SELECT COUNT(*) FROM scan_images WHERE scan_id=?", (rec.scan_id,)) == [(verdict.n_samples,)]


def test_moderator_tokens(tmp_path):
    mdb = ModerationDB(tmp_path)
    token = moderators.add(mdb, "Mo Lee")
    assert moderators.who(mdb, token) == "Mo Lee" and moderators.who(mdb, token + "x") is None
    assert "mod_" in token and token not in (tmp_path / "moderation.sqlite").read_bytes().decode("latin-1")
    with pytest.raises(ConflictError):
        moderators.add(mdb, "mo lee")
    with pytest.raises(InputError):
        moderators.add(mdb, "../etc")
    for reserved in ("admin", "Anonymous"):
        with pytest.raises(InputError, match="reserved"):
            moderators.add(mdb, reserved)
    assert [m.name for m in moderators.listed(mdb)] == ["Mo Lee"]
    moderators.revoke(mdb, "Mo Lee")
    assert moderators.who(mdb, token) is None
    with pytest.raises(NotFoundError):
        moderators.revoke(mdb, "Mo Lee")


def test_the_database_is_its_own_file_beside_the_catalogue(tmp_path):
    ModerationDB(tmp_path)
    assert (tmp_path / "moderation.sqlite").is_file()
    assert Path(tmp_path / "catalogue.sqlite").exists() is False


def test_an_artist_is_found_by_their_token_alone(tmp_path, portfolio, default_embedder):
    from mimicry.registry import artist_for_token

    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    token = ix.register_artist("Ada")
    assert artist_for_token(ix, token) == "Ada" and artist_for_token(ix, token + "x") is None
    assert artist_for_token(ix, ix.rotate_token("Ada")) == "Ada" and artist_for_token(ix, token) is None
