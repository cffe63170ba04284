"""A fuzz test of the HTTP API from its own OpenAPI schema: every route, its
path and query parameters drawn from Hypothesis strategies by their declared
type (with out-of-range integers, odd text and real artist names), any token
or none, any request id, and a body of any kind (none, JSON, multipart with
junk or a real image). No answer may be a 5xx, and every answer carries its
request id. Fixed seed (``derandomize``), :data:`PER_ROUTE` examples per route."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest
from PIL import Image

pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mimicry import StyleIndex  # noqa: E402
from mimicry.faces.http import create_app  # noqa: E402
from mimicry.settings import get_settings  # noqa: E402

ADMIN, SCAN = "admin-secret", "scan-secret"
PER_ROUTE = 25
EDGES = [0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**40]
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=8)


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def operations(schema: dict) -> list[tuple[str, str, list[dict]]]:
    """(method, path template, parameters) of every operation the schema lists."""
    return [(method.upper(), path, op.get("parameters", []))
            for path, item in sorted(schema["paths"].items()) for method, op in sorted(item.items())]


def value_of(param: dict, names: list[str]) -> st.SearchStrategy:
    """Values for one parameter, by its declared type (as text, as a URL carries it)."""
    kind = param.get("schema", {}).get("type")
    if kind == "integer":
        # Mostly the edges (0, -1, 2^63 - 1, 2^63, ...), then any size, small ids, and text.
        kinds = [st.sampled_from(EDGES)] * 6 + [st.integers(-(2**70), 2**70)] * 2 + [st.integers(0, 40)]
        return st.integers(0, 9).flatmap(lambda k: kinds[k].map(str) if k < 9 else st.text(max_size=12))
    return st.sampled_from(names) | st.text(max_size=40) | st.text(max_size=1000).map(lambda s: s * 3)


def body_of(png: bytes) -> st.SearchStrategy:
    """Request bodies: none, JSON, raw junk, or multipart files (junk or a real image)."""
    files = st.lists(st.tuples(st.sampled_from(["files", "file", "other"]), HEADER_TEXT,
                               st.binary(max_size=200) | st.just(png)), min_size=1, max_size=3)
    return st.one_of(
        st.just({}),
        JSON.map(lambda v: {"content": json.dumps(v), "headers": {"Content-Type": "application/json"}}),
        st.fixed_dictionaries({"name": st.text(max_size=120)}).map(lambda v: {"json": v}),
        st.binary(max_size=300).map(lambda b: {"content": b}),
        files.map(lambda fs: {"files": [(field, (name, data, "image/png")) for field, name, data in fs]}),
    )


@pytest.mark.parametrize("env", [{}, {"MIMICRY_SCAN_TOKEN": SCAN}], ids=["open", "scan-token"])
def test_no_request_the_schema_allows_gets_a_5xx(calibrated_copy, default_embedder, env):
    ix = StyleIndex.open(calibrated_copy, embedder=default_embedder)
    client = TestClient(create_app(ix, get_settings({"MIMICRY_ADMIN_TOKEN": ADMIN, **env})),
                        raise_server_exceptions=False)
    ops = operations(client.app.openapi())
    names = sorted(ix.info().artists) + ["alice-test", "ALICE-TEST"]
    assert len(ops) >= 12
    tokens = st.sampled_from([ADMIN, ADMIN, ADMIN, SCAN, None, "wrong"])  # most routes need the admin
    png = small_png()

    def fuzz(method: str, path: str, params: list[dict]) -> None:
        @settings(max_examples=PER_ROUTE, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def one(data) -> None:
            url, query = path, {}
            for p in params:
                if p["in"] == "path":
                    url = url.replace("{" + p["name"] + "}", quote(data.draw(value_of(p, names), label=p["name"]),
                                                                   safe=""))
                elif p["in"] == "query" and data.draw(st.integers(0, 3), label=f"send {p['name']}"):
                    query[p["name"]] = data.draw(value_of(p, names), label=p["name"])
            headers = {"X-Request-Id": data.draw(HEADER_TEXT, label="request id")}
            token = data.draw(tokens, label="token")
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            body = data.draw(body_of(png), label="body") if method in ("POST", "PUT", "PATCH") else {}
            r = client.request(method, url, params=query, headers={**headers, **body.pop("headers", {})}, **body)
            assert r.status_code < 500, (method, url, query, r.status_code, r.text[:500])
            assert r.headers.get("x-request-id"), (method, url)

        one()

    for op in ops:
        fuzz(*op)
