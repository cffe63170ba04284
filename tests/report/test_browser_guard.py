"""Without headless Chromium the browser tests fail unless skipping is asked
for with MIMICRY_ALLOW_NO_BROWSER=1; either way the reason names what is missing."""

from __future__ import annotations

import pytest

import browser


@pytest.fixture
def no_browser(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(browser, "DRIVER", str(tmp_path / "no-chromedriver"))
    monkeypatch.delenv("CI", raising=False)
    return tmp_path


def test_missing_browser_fails(no_browser, monkeypatch):
    monkeypatch.delenv("MIMICRY_ALLOW_NO_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="no-chromium.*MIMICRY_ALLOW_NO_BROWSER=1"):
        browser.chromium_or_skip()


def test_missing_browser_skips_only_when_allowed(no_browser, monkeypatch):
    monkeypatch.setenv("MIMICRY_ALLOW_NO_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="no-chromedriver"):
        browser.chromium_or_skip()
    monkeypatch.setenv("MIMICRY_ALLOW_NO_BROWSER", "0")
    with pytest.raises(pytest.fail.Exception):
        browser.chromium_or_skip()


def test_present_browser_passes(monkeypatch, tmp_path):
    for name in ("chromium", "chromedriver"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "chromium"))
    monkeypatch.setattr(browser, "DRIVER", str(tmp_path / "chromedriver"))
    monkeypatch.delenv("MIMICRY_ALLOW_NO_BROWSER", raising=False)
    assert browser.chromium_or_skip() is None
