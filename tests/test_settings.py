"""Settings: one place, environment over defaults, malformed values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimicry.errors import InputError
from mimicry.settings import ENVIRONMENT, Settings, get_settings


def test_defaults_and_environment():
    assert get_settings({}) == Settings()
    s = get_settings({"MIMICRY_FPR": "0.05", "MIMICRY_INDEX": "/srv/ix", "MIMICRY_TOP": "7",
                      "MIMICRY_LOCK_WAIT": "0.5"})
    assert (s.fpr, s.index, s.top, s.lock_wait_s) == (0.05, Path("/srv/ix"), 7, 0.5)
    assert set(ENVIRONMENT) == set(Settings.__dataclass_fields__)


@pytest.mark.parametrize("name,value,words", [
    ("MIMICRY_FPR", "lots", "MIMICRY_FPR"),
    ("MIMICRY_FPR", "1.5", "between 0 and 1"),
    ("MIMICRY_ALPHA", "0", "between 0 and 1"),
    ("MIMICRY_BATCH_SIZE", "0", "MIMICRY_BATCH_SIZE must be at least 1"),
    ("MIMICRY_TOP", "-2", "MIMICRY_TOP must be at least 1"),
    ("MIMICRY_LOCK_WAIT", "-1", "must not be negative"),
    ("MIMICRY_SNAPSHOT_RETRIES", "-1", "must not be negative"),
    ("MIMICRY_MIN_SAMPLES", "300", "must not exceed"),
])
def test_malformed_values_are_named(name, value, words):
    with pytest.raises(InputError, match=words):
        get_settings({name: value})
