"""Lookbacks belong to the process that queued them: a second process on the
same folder leaves a live process's lookbacks alone and takes over those of a
process that was killed; the moderation database migrates from version 1."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from mimicry.errors import PinMismatchError
from mimicry.moderation import lookback, owners
from mimicry.moderation.db import VERSION, ModerationDB

HOLDER = textwrap.dedent("""
    import sys, time
    from mimicry.moderation import lookback
    from mimicry.moderation.db import ModerationDB
    mdb = ModerationDB(sys.argv[1])
    print(lookback.begin(mdb, "held-by-a-live-process"), flush=True)
    time.sleep(600)
""")


def test_a_live_processs_lookback_is_left_to_it_and_a_killed_ones_is_taken_over(tmp_path):
    mdb = ModerationDB(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        held = int(holder.stdout.readline())
        mine = lookback.begin(mdb, "queued-here")
        with mdb.transaction() as db:  # a row of a process that ended long ago, its file gone
            db.execute("UPDATE lookbacks SET owner='0123abcd' WHERE id=?", (mine,))
        assert lookback.interrupted(mdb) == ["queued-here"]
        assert lookback.get(mdb, held).state == "queued"  # its process is alive: not touched
        assert lookback.get(mdb, mine).state == "failed"
        (tmp_path / owners.OWNERS / "feedface.lock").write_bytes(b"")  # an ended process's, its lookbacks done
        assert len(list((tmp_path / owners.OWNERS).iterdir())) == 3  # that one, the holder's, this process's
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert lookback.interrupted(mdb) == ["held-by-a-live-process"]
        got = lookback.get(mdb, held)
        assert (got.state, got.error) == ("failed", "interrupted: the service stopped")
        assert list((tmp_path / owners.OWNERS).iterdir()) == [tmp_path / owners.OWNERS /
                                                              f"{owners.this_process(tmp_path)}.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_this_processs_own_lookbacks_count_as_alive(tmp_path):
    mdb = ModerationDB(tmp_path)
    lookback.begin(mdb, "mine")
    assert lookback.interrupted(mdb) == []
    assert owners.alive(tmp_path, owners.this_process(tmp_path))
    assert not owners.alive(tmp_path, None) and not owners.alive(tmp_path, "../etc")


def test_a_version_1_database_is_migrated_and_a_newer_one_refused(tmp_path):
    mdb = ModerationDB(tmp_path)
    with mdb.transaction() as db:  # as version 1 left it: lookbacks without an owner
        db.execute("INSERT INTO lookbacks(artist, state, started_at) VALUES('old', 'running', 0)")
        db.execute("ALTER TABLE lookbacks DROP COLUMN owner")
        db.execute("UPDATE meta SET value='1' WHERE key='version'")
    mdb.close()
    mdb = ModerationDB(tmp_path)
    assert mdb.read("SELECT value FROM meta WHERE key='version'") == [(str(VERSION),)]
    assert mdb.read("SELECT artist, owner FROM lookbacks") == [("old", None)]
    assert lookback.interrupted(mdb) == ["old"]  # no owner: a process that is gone
    with mdb.transaction() as db:
        db.execute("UPDATE meta SET value=? WHERE key='version'", (str(VERSION + 1),))
    mdb.close()
    with pytest.raises(PinMismatchError, match="newer"):
        ModerationDB(tmp_path)


def test_a_database_without_its_version_row_gets_the_columns_it_lacks(tmp_path):
    mdb = ModerationDB(tmp_path)
    with mdb.transaction() as db:  # tables made, version row never written (a kill in between)
        db.execute("ALTER TABLE lookbacks DROP COLUMN owner")
        db.execute("DELETE FROM meta")
    mdb.close()
    mdb = ModerationDB(tmp_path)
    lookback.begin(mdb, "ann")
    assert mdb.read("SELECT value FROM meta WHERE key='version'") == [(str(VERSION),)]
    assert lookback.interrupted(mdb) == []  # this process's own


def test_a_forked_child_lets_go_of_its_parents_owner_files(tmp_path):
    import os

    mine = owners.this_process(tmp_path)
    child = os.fork()
    if child == 0:  # the child: its own owner id, and the parent's fd closed
        code = 0 if owners.this_process(tmp_path) != mine else 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert owners.alive(tmp_path, mine)  # the parent's lock outlives the child's closing its copy
    assert len(list((tmp_path / owners.OWNERS).glob("*.lock"))) == 2
    assert owners.sweep(tmp_path) == 1  # the child's, its process gone
