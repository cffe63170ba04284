"""A hub for the web pages' tests: a copy of the demo's calibrated index with a
flagged upload recorded in its history (two imitations and a photo, as the
service will record ``/v1/scan``), a model's samples recorded at a tier, a
moderator and a registered artist with a token."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mimicry import ImageBytes, StyleIndex
from mimicry.moderation import history, moderators
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import HubIds

ADMIN = "admin-secret-token"
UPLOAD_ID, UPLOADER, MODEL_ID = "upload-7f3a", "uploader-bob", "model-c0ffee"


@dataclass
class Hub:
    folder: Path
    index: StyleIndex
    mdb: ModerationDB
    case: int  # the flagged upload's case
    model_case: int | None  # the model's case (None when the model is at no tier)
    flagged_artist: str
    moderator: str  # the moderator's token
    artist: str  # the registered artist's name
    artist_token: str


def painting(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    """A noisy gradient PNG of ``size`` (one larger than 1024 px shows the large pictures' side)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    base = np.stack([x / size[0] * 255, y / size[1] * 200, (x + y) % 97 * 2.5], -1)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def make_hub(folder: Path, demo, embedder, model: bool = False) -> Hub:
    """The hub over the index copy at ``folder`` (``model``: record a model case too)."""
    res, _, out = demo
    target = res.fine_tuned_artist
    paths = [out / "imitations" / f"imitation-of-{target}-{i}.png" for i in (0, 1)] + [out / "unrelated" / "photo-00.png"]
    uploads = [p.read_bytes() for p in paths]
    ix = StyleIndex.open(folder, embedder=embedder)
    mdb = ModerationDB(folder)
    results = ix.scan([ImageBytes(p.name, b) for p, b in zip(paths, uploads)])
    rec = history.record_images(mdb, results, uploads, HubIds(UPLOAD_ID, None, UPLOADER), "req-web-1")
    model_case = None
    if model:
        samples = sorted((out / "samples-fine-tune").glob("*.png"))
        data = [p.read_bytes() for p in samples]
        verdict = ix.scan_model([ImageBytes(p.name, b) for p, b in zip(samples, data)])
        model_case = history.record_model(mdb, verdict, data, HubIds(None, MODEL_ID, UPLOADER)).case_id
    token = moderators.add(mdb, "Mo Derator")
    artist_token = ix.register_artist("Web Artist")
    return Hub(folder, ix, mdb, rec.case_id, model_case, target, token, "Web Artist", artist_token)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    m = CSRF.search(html)
    assert m, "no form with a CSRF token on this page"
    return m.group(1)


def sign_in(client, token: str):
    """Signs ``client`` (a TestClient) in with ``token``; the answer to the POST."""
    page = client.get("/")
    return client.post("/signin", data={"token": token, "csrf": csrf_of(page.text)}, follow_redirects=False)


#: What a page fetched and how it is laid out, read from the live page.
PAGE_FACTS = """
const imgs = Array.from(document.images);
return {
  url: location.href,
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  sources: Array.from(document.querySelectorAll('[src],[href],[action]'))
             .map(e => e.src || e.href || e.action).filter(u => typeof u === 'string'),
  undecoded: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  no_alt: imgs.filter(i => !i.alt).length,
  scroll_width: document.documentElement.scrollWidth,
  client_width: document.documentElement.clientWidth,
  styled: getComputedStyle(document.body).fontFamily.includes('system-ui'),
};
"""


def page_facts(driver, base: str) -> dict:
    """The facts of the page the browser is on, once its images have decoded;
    asserts that everything it fetched or points to is this service's or a
    ``data:`` URI, that it never scrolls sideways and that its stylesheet applied."""
    driver.execute_async_script("""
      const done = arguments[arguments.length - 1];
      Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() => done(null));
    """)
    facts = driver.execute_script(PAGE_FACTS)
    foreign = [u for u in facts["fetched"] + facts["sources"] if not (u.startswith(base + "/") or u.startswith("data:"))]
    assert foreign == [], (facts["url"], foreign)
    assert f"{base}/web.css" in facts["fetched"], "the stylesheet is not the service's own"
    assert facts["scroll_width"] <= facts["client_width"], f"{facts['url']} scrolls sideways"
    assert facts["undecoded"] == [] and facts["no_alt"] == 0, facts
    assert facts["styled"], "the stylesheet did not apply"
    return facts
