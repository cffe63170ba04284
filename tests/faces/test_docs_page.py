"""``/docs`` (Swagger UI) works with no network: its script, style sheet and
icon come from the package, not a CDN. Checked in headless Chromium against a
live server: the Swagger UI renders the API's operations, and every asset the
page names is served by the app itself and answers 200."""

from __future__ import annotations

import pytest

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from browser import browser  # noqa: E402
from helpers import served  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.index import StyleIndex  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402

ASSETS = """
return Array.from(document.querySelectorAll('script[src], link[href]'))
  .map(e => e.getAttribute('src') || e.getAttribute('href'));
"""


@pytest.fixture
def app(calibrated_copy, default_embedder):
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    return create_app(ix, get_settings({"MIMICRY_ADMIN_TOKEN": "admin-secret"}))


def test_docs_names_only_its_own_assets_and_each_answers(app):
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn." not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        answer = client.get(f"/docs-assets/{asset}")
        assert answer.status_code == 200 and len(answer.content) > 0, asset
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not served


@pytest.mark.slow
def test_docs_renders_in_chromium_with_no_network(app):
    with served(app) as base:
        with browser(1280) as driver:
            from selenium.webdriver.support.ui import WebDriverWait

            driver.get(f"{base}/docs")
            # Swagger UI has loaded the OpenAPI document and drawn its operations.
            WebDriverWait(driver, 30).until(
                lambda d: d.find_elements("css selector", "#swagger-ui .swagger-ui .opblock"))
            assert driver.find_elements("css selector", "#swagger-ui .info .title")
            assets = driver.execute_script(ASSETS)
            assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
            loaded = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            assert all(u.startswith(base) for u in loaded), loaded
        with TestClient(app) as client:
            for asset in assets:
                assert client.get(asset).status_code == 200, asset
