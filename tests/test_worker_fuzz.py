"""Property: whatever path, method and headers a client sends, the registry never answers 500 (or 503).

Requests go straight into the ASGI app (no HTTP client to tidy them up first), so the paths and
headers are as hostile as hypothesis can make them: traversal, encoded slashes, odd Unicode,
absurd ranges and conditionals. Both kinds of store are tried: a key S3 refuses must not become a
503 any more than a path the filesystem refuses.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.build.publish import BuiltImage
from pipeline.store import open_store
from tests.registry_fixtures import NAME, moto_s3, publish, small_model_files
from worker.app import create_app
from worker.config import RegistryConfig


@pytest.fixture(scope="module", params=["local", "s3"])
def published(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, BuiltImage, Path]]:
    """The app over a store of each kind holding one image and a site page; a file lies beside the store."""
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    (root / "outside.txt").write_bytes(b"OUTSIDE-THE-STORE")
    with moto_s3() if request.param == "s3" else contextlib.nullcontext():
        store = open_store("s3://models/fuzz" if request.param == "s3" else str(root / "store"))
        built = publish(store, root / "model", small_model_files())
        store.backend.write("site/index.html", b"<h1>site</h1>")
        yield create_app(store, RegistryConfig(cache_seconds=0)), built, root


def call(
    app: Any, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One request through the ASGI app; its status, body and headers."""
    path_bytes, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote_to_bytes(path_bytes).decode("utf-8", "replace"),
        "raw_path": path_bytes,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 5000),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    anyio.run(app, scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], body, dict(start["headers"])


TOKENS = ["v2", "org", "model", "manifests", "blobs", "tags", "list", "referrers", "_catalog", "latest", "..", ".",
          "%2F", "%2f", "%5C", "%2e%2e", "%00", "sha256:", "sha256:" + "a" * 64, "%3A", "~", "\\", "", "?n=", "&last=",
          "outside.txt", "site", "index.html", "Ünï", "\u202e", "%ff", "x" * 300]  # fmt: skip
segments = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)), max_size=12)
ranges = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda a, b: f"bytes={a}-{b}", st.integers(-5, 10**25) | st.just(""), st.integers(-5, 10**25) | st.just("")
    ),
    st.lists(st.tuples(st.integers(0, 500_000), st.integers(0, 500_000)), max_size=150).map(
        lambda rs: "bytes=" + ",".join(f"{a}-{b}" for a, b in rs)
    ),
)
header_names = st.sampled_from([b"range", b"if-none-match", b"if-range", b"accept", b"host", b"authorization"])
headers = st.lists(st.tuples(header_names, st.one_of(ranges, st.text(max_size=60)).map(lambda v: v.encode("utf-8", "replace"))), max_size=4)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD", "GET", "PUT", "DELETE", "POST", "X" * 20]),
    parts=segments,
    headers=headers,
)
def test_no_request_gets_a_500(
    published: tuple[Any, BuiltImage, Path], method: str, parts: list[str], headers: list[tuple[bytes, bytes]]
) -> None:
    app, _, _ = published
    raw_path = ("/" + "/".join(parts)).encode("utf-8", "replace")
    status, body, response_headers = call(app, method, raw_path, headers)
    assert status < 500, (status, body)
    assert b"OUTSIDE-THE-STORE" not in body
    if status >= 400 and method != "HEAD":
        assert response_headers[b"content-type"] == b"application/json"
        assert json.loads(body)["errors"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(range_header=ranges, if_range=st.one_of(st.none(), st.text(max_size=80)))
def test_blob_ranges_never_500_and_never_exceed_the_blob(
    published: tuple[Any, BuiltImage, Path], range_header: str, if_range: str | None
) -> None:
    app, built, _ = published
    headers = [(b"range", range_header.encode("utf-8", "replace"))]
    if if_range is not None:
        headers.append((b"if-range", if_range.encode("utf-8", "replace")))
    status, body, response_headers = call(app, "GET", f"/v2/{NAME}/blobs/{built.layer.digest}".encode(), headers)
    assert status in (200, 206, 400, 416), status
    assert int(response_headers[b"content-length"]) == len(body)
    if status == 206 and not response_headers[b"content-type"].startswith(b"multipart/"):
        assert len(body) <= built.layer.size
    if status == 206:  # overlapping ranges were merged: never more than the blob plus framing
        assert len(body) <= built.layer.size + 200 * 100
