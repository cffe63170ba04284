"""The catalogue never runs code: stored arrays load with pickling off."""

from __future__ import annotations

import io
import os
import pickle
import sqlite3

import numpy as np
import pytest

from mimicry import StyleIndex
from mimicry.errors import CorruptIndexError


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickled_calibration_is_refused_and_never_run(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    ix.calibrate()
    marker = tmp_path / "code-ran"
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(str(marker))], dtype=object), allow_pickle=True)
    for blob in (buf.getvalue(), pickle.dumps(Payload(str(marker)))):
        db = sqlite3.connect(tmp_path / "ix" / "catalogue.sqlite")
        db.execute("UPDATE blobs SET data=? WHERE name='calibration'", (blob,))
        db.commit()
        db.close()
        with pytest.raises(CorruptIndexError, match="refused") as err:
            StyleIndex.open(tmp_path / "ix")
        assert "never runs code" in str(err.value) and err.value.code == "corrupt_index"
        assert not marker.exists()

    # The remedy the message names works: calibrate (which opens without reading it) overwrites it.
    StyleIndex.open(tmp_path / "ix", embedder=default_embedder, verify=False).calibrate()
    assert StyleIndex.open(tmp_path / "ix").info().calibration == "current"


def test_a_malformed_calibration_is_a_clear_error_and_calibrate_mends_it(tmp_path, portfolio, default_embedder):
    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(portfolio)
    ix.calibrate()
    buf = io.BytesIO()
    np.savez(buf, mu=np.zeros(3))  # plain arrays, but not a calibration
    db = sqlite3.connect(tmp_path / "ix" / "catalogue.sqlite")
    db.execute("UPDATE blobs SET data=? WHERE name='calibration'", (buf.getvalue(),))
    db.commit()
    db.close()
    with pytest.raises(CorruptIndexError, match="malformed"):
        StyleIndex.open(tmp_path / "ix")
    # A writer works without it, but never hands readers a state that hides it.
    broken = StyleIndex.open(tmp_path / "ix", embedder=default_embedder, verify=False)
    broken.remove_artist(sorted(p.name for p in portfolio.iterdir())[0])
    with pytest.raises(CorruptIndexError, match="malformed"):
        broken.snapshot()
    StyleIndex.open(tmp_path / "ix", embedder=default_embedder, verify=False).calibrate()
    assert StyleIndex.open(tmp_path / "ix").info().calibration == "current"
