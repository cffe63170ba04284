"""The web pages in headless Chromium over a real server, at a phone's and a
desktop's width: a moderator goes from a flagged upload in the queue to a
confirmed case, an artist from sign-in to an uploaded work, with no script.
On every page, everything the browser fetched (and every link, image and form
target) is the service's own or a ``data:`` URI, nothing scrolls sideways,
and every image decodes. Without Chromium these tests fail, saying what is
missing, unless ``MIMICRY_ALLOW_NO_BROWSER=1`` (then they skip)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from browser import browser, chromium_or_skip
from mimicry.faces.http import create_app
from mimicry.moderation import cases
from mimicry.settings import get_settings
from helpers import served
from webhub import ADMIN, make_hub, page_facts, painting

pytestmark = pytest.mark.slow
WIDTHS = (390, 1280)


@pytest.fixture
def hub(calibrated_copy, demo, default_embedder):
    chromium_or_skip()
    return make_hub(calibrated_copy, demo, default_embedder)


def app_of(hub):
    return create_app(hub.index, replace(get_settings({}), admin_token=ADMIN))


def sign_in(driver, base: str, token: str) -> None:
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("css selector", "form.signin button[type=submit]").click()


def at(driver, url: str) -> bool:
    """Whether the browser reaches ``url`` (a submitted form navigates after the click returns)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 20).until(lambda d: d.current_url == url and
                                        d.execute_script("return document.readyState") == "complete")
    except TimeoutException:
        return False
    return True


WIDTH_OF = "return arguments[0].getBoundingClientRect().width"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_moderator_goes_from_a_flagged_upload_to_a_confirmed_case(hub, width):
    with served(app_of(hub)) as base, browser(width) as driver:
        driver.get(f"{base}/cases")
        assert at(driver, f"{base}/"), "no session: the queue sends the browser to sign in"
        page_facts(driver, base)
        sign_in(driver, base, hub.moderator)
        assert at(driver, f"{base}/cases")
        page_facts(driver, base)
        card = driver.find_element("css selector", f'[data-case="{hub.case}"]')
        assert "flagged" in card.text.lower() and hub.flagged_artist in card.text and "opened just now" in card.text
        card.find_element("css selector", "a.case-link").click()
        assert at(driver, f"{base}/cases/{hub.case}")
        page_facts(driver, base)
        words = driver.find_element("css selector", '[data-words="flagged"]').text
        assert words.startswith(f"FLAGGED: imitates {hub.flagged_artist}")
        upload = driver.find_element("css selector", ".row .tile.upload img")
        work = driver.find_element("css selector", ".row .tile.work img")
        side = min(512, width - 32)  # the page's padding on a phone
        assert driver.execute_script(WIDTH_OF, upload) >= side and driver.execute_script(WIDTH_OF, work) >= side
        if width >= 1100:  # side by side on a desktop: the upload and a work on one line
            top = "return arguments[0].getBoundingClientRect().top"
            assert driver.execute_script(top, upload) == driver.execute_script(top, work)
        before = driver.execute_script(WIDTH_OF, work)
        summary = driver.find_element("css selector", ".row .tile.work details.zoom summary")
        driver.execute_script("arguments[0].scrollIntoView()", summary)
        summary.click()
        after = driver.execute_script(WIDTH_OF, work)
        assert after >= min(2 * before, width - 32) - 1, (before, after)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        driver.find_element("id", "note").send_keys("same brushwork as the portfolio")
        driver.find_element("css selector", "button[value=confirm]").click()
        assert at(driver, f"{base}/cases/{hub.case}?done=confirm")
        page_facts(driver, base)
        assert driver.find_element("css selector", "[data-state]").text == "confirmed"
        assert "same brushwork" in driver.find_element("css selector", ".decisions").text
    assert cases.get_case(hub.mdb, hub.case).state == "confirmed"


@pytest.mark.parametrize("width", WIDTHS)
def test_an_artist_goes_from_sign_in_to_an_uploaded_work(hub, width, tmp_path):
    upload = tmp_path / "my-new-painting.png"
    upload.write_bytes(painting(11))
    with served(app_of(hub)) as base, browser(width) as driver:
        driver.get(f"{base}/artist")
        assert at(driver, f"{base}/")
        sign_in(driver, base, hub.artist_token)
        assert at(driver, f"{base}/artist")
        page_facts(driver, base)
        assert driver.find_elements("css selector", ".work-card") == []
        driver.find_element("id", "files").send_keys(str(upload))
        driver.find_element("css selector", "form.upload button[type=submit]").click()
        assert at(driver, f"{base}/artist?done=added&n=1")
        facts = page_facts(driver, base)
        assert "Added 1 work." in driver.find_element("css selector", ".note").text
        (work,) = hub.index.works(hub.artist)
        card = driver.find_element("css selector", f'[data-work="{work.id}"]')
        assert card.find_element("css selector", "img").get_attribute("naturalWidth") == "256"
        assert any(u.endswith(f"/works/{work.id}/thumb") for u in facts["fetched"])
        # The artist is not a moderator: the queue refuses them, from the page too.
        driver.get(f"{base}/cases")
        assert "for moderators" in driver.find_element("css selector", "[data-error]").text
        driver.find_element("css selector", "form[action='/signout'] button").click()
        assert at(driver, f"{base}/?note=signed-out")
        driver.get(f"{base}/artist")
        assert at(driver, f"{base}/")
