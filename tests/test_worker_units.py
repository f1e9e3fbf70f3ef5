"""The registry's pure parts: ranges, paths, pagination, site keys, the cache, errors and counters."""

from __future__ import annotations

import json

import pytest

from worker import paths
from worker.cache import MISSING, ExpiringCache
from worker.errors import RegistryError, error_body
from worker.metrics import Metrics
from worker.pagination import MAX_PAGE, paginate
from worker.ranges import (
    MAX_RANGES,
    ByteRange,
    MalformedRange,
    Multipart,
    UnsatisfiableRange,
    etag_matches,
    if_range_allows,
    parse_range,
)
from worker.site import content_type, site_key

DIGEST = "sha256:" + "a" * 64

# ranges


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", [(0, 100)]),  # single
        ("bytes=990-2000", [(990, 1000)]),  # last position past the end is clipped
        ("bytes=500-", [(500, 1000)]),  # open-ended
        ("bytes=-10", [(990, 1000)]),  # suffix
        ("bytes=-5000", [(0, 1000)]),  # suffix longer than the blob
        ("bytes=0-0,-1", [(0, 1), (999, 1000)]),  # multi, in request order
        ("bytes=900-909, 0-9", [(900, 910), (0, 10)]),  # order kept when nothing overlaps
        ("bytes=0-9,5000-6000", [(0, 10)]),  # an unsatisfiable part is dropped
        ("bytes=0-499,100-199,400-600", [(0, 601)]),  # overlaps are merged: never more than the blob
        ("Bytes = 1-2", [(1, 3)]),
    ],
)
def test_parse_range(header: str, expected: list[tuple[int, int]]) -> None:
    assert parse_range(header, 1000) == [ByteRange(a, b) for a, b in expected]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=1000-1000,2000-"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, 1000)


def test_every_range_of_an_empty_blob_is_unsatisfiable() -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=-1", 0)
    with pytest.raises(UnsatisfiableRange):
        parse_range("bytes=0-", 0)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=5-1",
        "bytes=1-2-3",
        "bytes 0-1",
        "items=0-1",
        "bytes=0-1,,2-3",
        "bytes=+1-2",
        "bytes=١-٢",  # non-ASCII digits
        "bytes=" + "9" * 40 + "-",
        "bytes=" + ",".join(["0-1"] * (MAX_RANGES + 1)),
        "bytes=0-1" + " " * 5000,
    ],
)
def test_malformed_ranges(header: str) -> None:
    with pytest.raises(MalformedRange):
        parse_range(header, 1000)


def test_content_range_and_multipart_framing() -> None:
    assert ByteRange(0, 100).content_range(1000) == "bytes 0-99/1000"
    parts = Multipart([ByteRange(0, 2), ByteRange(8, 10)], 10, "XYZ", "application/octet-stream")
    body = parts.part_header(parts.ranges[0]) + b"ab" + parts.part_header(parts.ranges[1]) + b"ij" + parts.closing
    assert parts.content_length == len(body)
    assert parts.content_type == "multipart/byteranges; boundary=XYZ"
    assert body.startswith(
        b"\r\n--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\nab"
    )
    assert body.endswith(b"ij\r\n--XYZ--\r\n")


def test_conditional_headers() -> None:
    etag = f'"{DIGEST}"'
    assert etag_matches(etag, etag) and etag_matches(f'"x", W/{etag}', etag) and etag_matches("*", etag)
    assert not etag_matches('"sha256:other"', etag)
    assert if_range_allows(None, etag) and if_range_allows(f" {etag} ", etag)
    assert not if_range_allows('"sha256:other"', etag)
    assert not if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", etag)  # no Last-Modified: dates never match


# paths


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v2/", paths.Base()),
        ("/v2", paths.Base()),
        ("/v2/_catalog", paths.Catalog()),
        ("/v2/org/model/tags/list", paths.TagList("org/model")),
        ("/v2/a/b/c/manifests/v1.0", paths.Manifest("a/b/c", "v1.0")),
        (f"/v2/gpt2/manifests/{DIGEST}", paths.Manifest("gpt2", DIGEST)),
        (f"/v2/org/model/blobs/{DIGEST}", paths.Blob("org/model", DIGEST)),
        (f"/v2/org/model/referrers/{DIGEST}", paths.Referrers("org/model", DIGEST)),
        # 'manifests' is a valid name component: the last endpoint keyword wins
        ("/v2/x/manifests/y/manifests/latest", paths.Manifest("x/manifests/y", "latest")),
    ],
)
def test_v2_paths(path: str, endpoint: paths.Endpoint) -> None:
    assert paths.parse_v2_path(path) == endpoint


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/Org/model/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/../../etc/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/org//model/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/org/model/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        ("/v2/org/model/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/org/model/blobs/latest", 400, "DIGEST_INVALID"),
        ("/v2/org/model/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/org/model/referrers/../x", 404, "NOT_FOUND"),
        ("/v2/org/model", 404, "NOT_FOUND"),
        ("/v2/org/model/blobs/uploads/", 404, "NOT_FOUND"),
        ("/v2/" + "a/" * 2000 + "manifests/latest", 400, "NAME_INVALID"),
    ],
)
def test_bad_v2_paths(path: str, status: int, code: str) -> None:
    with pytest.raises(RegistryError) as caught:
        paths.parse_v2_path(path)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_encoded_slashes_are_spotted() -> None:
    assert paths.has_encoded_slash(b"/v2/org%2Fmodel/tags/list")
    assert paths.has_encoded_slash(b"/..%5c..%5cetc")
    assert not paths.has_encoded_slash(b"/v2/org/model/manifests/sha256%3Aabc")


# pagination


def test_pagination() -> None:
    tags = ["a", "b", "c", "d"]
    assert paginate(tags, None, None, None).items == tags
    page = paginate(tags, "2", None, None)
    assert page.items == ["a", "b"] and page.link("/v2/x/tags/list") == '</v2/x/tags/list?n=2&last=b>; rel="next"'
    page = paginate(tags, "2", "b", None)
    assert page.items == ["c", "d"] and page.link("/p") is None
    assert paginate(tags, None, "bb", None).items == ["c", "d"]  # `last` need not be an entry
    assert paginate(tags, "0", None, None).items == []
    assert paginate(tags, "10", None, None).link("/p") is None
    big = [f"t{i:05d}" for i in range(MAX_PAGE + 5)]
    assert len(paginate(big, str(10**6), None, None).items) == MAX_PAGE  # n is capped
    assert paginate(big, None, None, MAX_PAGE).link("/p") is not None


@pytest.mark.parametrize("n", ["-1", "x", "1.5", "", "9" * 20, "١"])
def test_pagination_refuses_bad_counts(n: str) -> None:
    with pytest.raises(RegistryError) as caught:
        paginate(["a"], n, None, None)
    assert caught.value.code == "PAGINATION_NUMBER_INVALID" and caught.value.status == 400


# the site


def test_site_keys() -> None:
    assert site_key("/") == "index.html"
    assert site_key("/models/gpt2/") == "models/gpt2/index.html"
    assert site_key("/static/app.css") == "static/app.css"
    for hostile in ("/../store", "/a/../../b", "//etc/passwd", "/a\\b", "/a\0b", "/./x"):
        with pytest.raises(RegistryError) as caught:
            site_key(hostile)
        assert caught.value.status == 400
    with pytest.raises(RegistryError) as caught:
        site_key("/" + "x" * 256)  # longer than any file name can be
    assert caught.value.status == 404
    assert content_type("index.html") == "text/html; charset=utf-8"
    assert content_type("data.bin") == "application/octet-stream"


# the cache


def test_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache: ExpiringCache[str, int | None] = ExpiringCache(5, max_entries=2, clock=lambda: now[0])
    cache.put("a", None)
    assert cache.get("a") is None  # a cached None is an answer, not a miss
    assert cache.get("b") is MISSING
    cache.put("b", 2)
    cache.put("c", 3)
    assert len(cache) == 2 and cache.get("a") is MISSING  # the oldest went first
    now[0] = 5.0
    assert cache.get("b") is MISSING  # expired
    off: ExpiringCache[str, int] = ExpiringCache(0, max_entries=2)
    off.put("a", 1)
    assert off.get("a") is MISSING


# errors and counters


def test_error_body_is_the_spec_shape() -> None:
    assert json.loads(error_body("BLOB_UNKNOWN", "blob unknown to registry", {"digest": DIGEST})) == {
        "errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": {"digest": DIGEST}}]
    }
    error = RegistryError.name_invalid("x" * 10_000)
    assert len(error.body()) < 600  # client input is echoed clipped


def test_metrics_text() -> None:
    metrics = Metrics()
    metrics.count_pull("org/model", "latest")
    metrics.count_pull("org/model", "latest")
    metrics.count_pull_by_digest("org/model")
    metrics.count_response("GET", 200, 10)
    metrics.count_response("BREW", 405, 5)
    text = metrics.render()
    assert 'modelyard_pulls_total{repository="org/model",tag="latest"} 2\n' in text
    assert 'modelyard_digest_pulls_total{repository="org/model"} 1\n' in text
    assert 'modelyard_http_responses_total{method="OTHER",status="405"} 1\n' in text
    assert "modelyard_http_response_body_bytes_total 15\n" in text
