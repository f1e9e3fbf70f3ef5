"""Every route and status of the registry app, through an HTTP client against the ASGI app."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline.build.publish import BuiltImage
from pipeline.errors import StoreError
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST
from pipeline.store import LocalBackend, ObjectInfo, Store, blob_key
from pipeline.store.s3 import S3Backend
from tests.conftest import with_formats
from tests.registry_fixtures import NAME, publish, small_model_files
from worker.accesslog import AccessLog
from worker.app import IMMUTABLE, create_app
from worker.config import RegistryConfig
from worker.metrics import Metrics

SITE = {
    "site/index.html": b"<h1>models</h1>",
    "site/models/index.html": b"<ul></ul>",
    "site/static/app.css": b"body{}",
}


@pytest.fixture
def image(store: Store, tmp_path: Path) -> BuiltImage:
    built = publish(store, tmp_path / "model", small_model_files())
    for key, data in SITE.items():
        store.backend.write(key, data)
    return built


@pytest.fixture
def client(store: Store, image: BuiltImage) -> Iterator[TestClient]:
    with TestClient(create_app(store), follow_redirects=False) as client:
        yield client


def errors_of(response: object) -> list[str]:
    body = json.loads(response.content)  # type: ignore[attr-defined]
    return [error["code"] for error in body["errors"]]


def layer_bytes(store: Store, image: BuiltImage) -> bytes:
    return b"".join(store.read_blob_range(image.layer.digest, 0, image.layer.size))


def test_base(client: TestClient) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(method, "/v2/")
        assert response.status_code == 200
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert client.get("/v2").json() == {}


def test_manifest_by_tag_is_the_stored_bytes(client: TestClient, store: Store, image: BuiltImage) -> None:
    response = client.get(f"/v2/{NAME}/manifests/latest")
    assert response.status_code == 200
    assert response.content == store.read_blob(image.index.digest)
    assert response.headers["content-type"] == MEDIA_TYPE_INDEX
    assert response.headers["docker-content-digest"] == image.index.digest
    assert response.headers["content-length"] == str(image.index.size)
    assert response.headers["etag"] == f'"{image.index.digest}"'
    assert "cache-control" not in response.headers  # a tag may move
    head = client.head(f"/v2/{NAME}/manifests/{'b' * 40}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(image.index.size)
    assert head.headers["docker-content-digest"] == image.index.digest


def test_manifest_by_digest_is_immutable(client: TestClient, store: Store, image: BuiltImage) -> None:
    for manifest in image.image.manifests:
        digest = manifest.descriptor.digest
        response = client.get(f"/v2/{NAME}/manifests/{digest}")
        assert response.status_code == 200 and response.content == manifest.data
        assert response.headers["content-type"] == MEDIA_TYPE_MANIFEST
        assert response.headers["cache-control"] == IMMUTABLE
        assert hashlib.sha256(response.content).hexdigest() == digest.removeprefix("sha256:")
    not_modified = client.get(f"/v2/{NAME}/manifests/latest", headers={"If-None-Match": f'"{image.index.digest}"'})
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_unknown_manifests(client: TestClient, image: BuiltImage) -> None:
    cases = {
        f"/v2/{NAME}/manifests/nope": (404, "MANIFEST_UNKNOWN"),
        f"/v2/{NAME}/manifests/sha256:{'0' * 64}": (404, "MANIFEST_UNKNOWN"),
        f"/v2/{NAME}/manifests/{image.layer.digest}": (404, "MANIFEST_UNKNOWN"),  # a layer is no manifest
        f"/v2/{NAME}/manifests/{image.image.configs[0].descriptor.digest}": (404, "MANIFEST_UNKNOWN"),
        "/v2/org/other/manifests/latest": (404, "NAME_UNKNOWN"),
        f"/v2/org/other/manifests/{image.index.digest}": (404, "NAME_UNKNOWN"),
        "/v2/Org/Model/manifests/latest": (400, "NAME_INVALID"),
        f"/v2/{NAME}/manifests/.INVALID_MANIFEST_NAME": (404, "MANIFEST_UNKNOWN"),  # the conformance suite's
        f"/v2/{NAME}/manifests/sha256:xyz": (400, "DIGEST_INVALID"),
    }
    for path, (status, code) in cases.items():
        response = client.get(path)
        assert (response.status_code, errors_of(response)) == (status, [code]), path
        assert response.headers["content-type"] == "application/json"
        head = client.head(path)
        assert head.status_code == status and head.content == b""


def test_whole_blob(client: TestClient, store: Store, image: BuiltImage) -> None:
    path = f"/v2/{NAME}/blobs/{image.layer.digest}"
    response = client.get(path)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == image.layer.digest.removeprefix("sha256:")
    assert response.headers["content-length"] == str(image.layer.size)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == f'"{image.layer.digest}"'
    assert response.headers["docker-content-digest"] == image.layer.digest
    assert response.headers["cache-control"] == IMMUTABLE
    head = client.head(path, headers={"Range": "bytes=0-9"})  # HEAD ignores Range
    assert head.status_code == 200 and head.headers["content-length"] == str(image.layer.size) and head.content == b""
    config = image.image.configs[0]
    assert client.get(f"/v2/{NAME}/blobs/{config.descriptor.digest}").content == config.data
    assert client.get(path, headers={"If-None-Match": f'"{image.layer.digest}"'}).status_code == 304


def test_unknown_blobs(client: TestClient, image: BuiltImage) -> None:
    missing = f"/v2/{NAME}/blobs/sha256:{'0' * 64}"
    assert (client.get(missing).status_code, errors_of(client.get(missing))) == (404, ["BLOB_UNKNOWN"])
    other = client.get(f"/v2/org/other/blobs/{image.layer.digest}")
    assert (other.status_code, errors_of(other)) == (404, ["NAME_UNKNOWN"])
    bad = client.get(f"/v2/{NAME}/blobs/sha512:{'0' * 128}")
    assert (bad.status_code, errors_of(bad)) == (400, ["DIGEST_INVALID"])


def test_ranges(client: TestClient, store: Store, image: BuiltImage) -> None:
    path = f"/v2/{NAME}/blobs/{image.layer.digest}"
    data = layer_bytes(store, image)
    size = len(data)

    single = client.get(path, headers={"Range": "bytes=10-19"})
    assert single.status_code == 206 and single.content == data[10:20]
    assert single.headers["content-range"] == f"bytes 10-19/{size}"
    assert single.headers["content-length"] == "10"

    suffix = client.get(path, headers={"Range": "bytes=-51"})  # the eStargz footer
    assert suffix.status_code == 206 and suffix.content == data[-51:]
    assert suffix.headers["content-range"] == f"bytes {size - 51}-{size - 1}/{size}"

    open_ended = client.get(path, headers={"Range": f"bytes={size - 100}-"})
    assert open_ended.status_code == 206 and open_ended.content == data[-100:]

    multi = client.get(path, headers={"Range": "bytes=0-9,-20,100-199"})
    assert multi.status_code == 206
    assert multi.headers["content-length"] == str(len(multi.content))
    parts = multipart_parts(multi.headers["content-type"], multi.content)
    assert parts == [
        (f"bytes 0-9/{size}", data[0:10]),
        (f"bytes {size - 20}-{size - 1}/{size}", data[-20:]),
        (f"bytes 100-199/{size}", data[100:200]),
    ]

    unsatisfiable = client.get(path, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416 and errors_of(unsatisfiable) == ["RANGE_INVALID"]
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"

    for malformed in ("bytes=9-1", "bytes=x", "pages=1-2", "bytes=" + "0-1," * 200):
        response = client.get(path, headers={"Range": malformed})
        assert response.status_code == 400 and errors_of(response) == ["RANGE_INVALID"], malformed

    etag = f'"{image.layer.digest}"'
    matching = client.get(path, headers={"Range": "bytes=0-0", "If-Range": etag})
    assert matching.status_code == 206 and matching.content == data[:1]
    stale = client.get(path, headers={"Range": "bytes=0-0", "If-Range": '"sha256:old"'})
    assert stale.status_code == 200 and stale.content == data


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body, parsed by the stdlib."""
    assert re.fullmatch(r"multipart/byteranges; boundary=\w+", content_type)
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]


def test_tag_list_and_pagination(client: TestClient, store: Store, image: BuiltImage) -> None:
    for tag in ("v2", "v10", "a"):
        store.put_tag(NAME, tag, image.index)
    fresh = TestClient(create_app(store))  # the fixture's client may have cached the list
    every_tag = sorted(["a", "v10", "v2", *with_formats(["b" * 40, "latest"])])  # formats have tags too
    everything = fresh.get(f"/v2/{NAME}/tags/list")
    assert everything.json() == {"name": NAME, "tags": every_tag}
    assert "link" not in everything.headers
    first = fresh.get(f"/v2/{NAME}/tags/list?n=2")
    assert first.json()["tags"] == every_tag[:2] == ["a", "b" * 40]
    assert first.headers["link"] == f'</v2/{NAME}/tags/list?n=2&last={"b" * 40}>; rel="next"'
    second = fresh.get(f"/v2/{NAME}/tags/list?n=2&last={'b' * 40}")
    assert second.json()["tags"] == every_tag[2:4]
    last = fresh.get(f"/v2/{NAME}/tags/list?n=2&last={every_tag[-2]}")
    assert last.json()["tags"] == ["v2"] and "link" not in last.headers
    bad = fresh.get(f"/v2/{NAME}/tags/list?n=-1")
    assert bad.status_code == 400 and errors_of(bad) == ["PAGINATION_NUMBER_INVALID"]
    unknown = fresh.get("/v2/org/other/tags/list")
    assert unknown.status_code == 404 and errors_of(unknown) == ["NAME_UNKNOWN"]


def test_catalog(store: Store, image: BuiltImage, tmp_path: Path) -> None:
    for name in ("a/one", "z/last"):
        store.put_tag(name, "latest", image.index)
    client = TestClient(create_app(store))
    assert client.get("/v2/_catalog").json() == {"repositories": ["a/one", NAME, "z/last"]}
    page = client.get("/v2/_catalog?n=1&last=a/one")
    assert page.json() == {"repositories": [NAME]}
    assert page.headers["link"] == f'</v2/_catalog?n=1&last={NAME}>; rel="next"'


def test_referrers_list_the_formats_and_filter(client: TestClient, image: BuiltImage) -> None:
    listed = client.get(f"/v2/{NAME}/referrers/{image.index.digest}").json()["manifests"]
    assert sorted(m["digest"] for m in listed) == sorted(f.descriptor.digest for f in image.formats)
    response = client.get(f"/v2/{NAME}/referrers/{image.index.digest}?artifactType=application/x")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPE_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": []}
    assert response.headers["oci-filters-applied"] == "artifactType"
    assert client.get(f"/v2/org/other/referrers/{image.index.digest}").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"])
def test_writes_are_unsupported(client: TestClient, image: BuiltImage, method: str) -> None:
    for path in (
        "/v2/",
        f"/v2/{NAME}/manifests/latest",
        f"/v2/{NAME}/blobs/uploads/",
        f"/v2/{NAME}/blobs/{image.layer.digest}",
        "/",
    ):
        response = client.request(method, path, content=b"x")
        assert response.status_code == 405 and errors_of(response) == ["UNSUPPORTED"], (method, path)
        assert response.headers["allow"] == "GET, HEAD"


def test_site_is_served_at_the_root(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and home.content == SITE["site/index.html"]
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    assert client.get("/models/").content == SITE["site/models/index.html"]
    redirect = client.get("/models")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/models/"
    css = client.get("/static/app.css")
    assert css.content == b"body{}" and css.headers["content-type"] == "text/css; charset=utf-8"
    assert client.head("/static/app.css").headers["content-length"] == "6"
    missing = client.get("/nope.html")
    assert missing.status_code == 404 and errors_of(missing) == ["NOT_FOUND"]


def test_nothing_outside_the_layout(client: TestClient, store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"  # beside the store directory
    secret.write_text("do not serve")
    for path in (
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/static/..%2F..%2F..%2Fsecret.txt",
        "/v2/org%2Fmodel/manifests/latest",
        "/v2/..%2F..%2Fsecret/manifests/latest",
        "/%00",
    ):
        response = client.get(path)
        assert 400 <= response.status_code < 500, path
        assert b"do not serve" not in response.content
        assert errors_of(response)


def test_health_and_pull_counters(client: TestClient, image: BuiltImage) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    client.get(f"/v2/{NAME}/manifests/latest")
    client.get(f"/v2/{NAME}/manifests/latest")
    client.head(f"/v2/{NAME}/manifests/latest")  # not a pull
    client.get(f"/v2/{NAME}/manifests/{image.image.manifests[0].descriptor.digest}")
    text = client.get("/metrics").text
    assert f'modelyard_pulls_total{{repository="{NAME}",tag="latest"}} 2\n' in text
    assert f'modelyard_digest_pulls_total{{repository="{NAME}"}} 1\n' in text


def test_an_access_log_line_per_request(store: Store, image: BuiltImage) -> None:
    stream = io.StringIO()
    access_log = AccessLog(stream)
    client = TestClient(create_app(store, access_log=access_log))
    client.get(f"/v2/{NAME}/manifests/latest", headers={"Authorization": "Bearer sekrit"})
    client.get(f"/v2/{NAME}/tags/list?n=1&token=sekrit2")
    client.delete("/v2/")
    access_log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", f"/v2/{NAME}/manifests/latest", 200),
        ("GET", f"/v2/{NAME}/tags/list", 200),
        ("DELETE", "/v2/", 405),
    ]
    assert lines[0]["bytes"] == image.index.size and lines[0]["ms"] >= 0 and lines[0]["client"]
    assert "sekrit" not in stream.getvalue()


def test_tag_lookups_are_cached_briefly(store: Store, image: BuiltImage, tmp_path: Path) -> None:
    other = publish(store, tmp_path / "other", {"config.json": b"{}"}, name="org/other")
    cached = TestClient(create_app(store, RegistryConfig(cache_seconds=60)))
    uncached = TestClient(create_app(store, RegistryConfig(cache_seconds=0)))
    for client in (cached, uncached):
        assert client.get(f"/v2/{NAME}/manifests/latest").headers["docker-content-digest"] == image.index.digest
    store.put_tag(NAME, "latest", other.index)  # the tag moves
    assert cached.get(f"/v2/{NAME}/manifests/latest").headers["docker-content-digest"] == image.index.digest
    assert uncached.get(f"/v2/{NAME}/manifests/latest").headers["docker-content-digest"] == other.index.digest


def test_whole_blob_gets_may_redirect_but_ranges_never(store: Store, image: BuiltImage) -> None:
    config = RegistryConfig(public_blob_url="https://cdn.example/models/")
    client = TestClient(create_app(store, config), follow_redirects=False)
    path = f"/v2/{NAME}/blobs/{image.layer.digest}"
    redirect = client.get(path)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"https://cdn.example/models/blobs/sha256/{image.layer.digest[7:]}"
    assert client.get(path, headers={"Range": "bytes=0-1,5-6"}).status_code == 206
    assert client.get(path, headers={"Range": "bytes=0-1"}).status_code == 206
    assert client.head(path).status_code == 200


class DownBackend(LocalBackend):
    """A store whose disk has failed: every read raises."""

    def stat(self, key: str) -> ObjectInfo | None:
        raise StoreError(f"cannot read {self.root}/{key}: Input/output error")

    def read(self, key: str) -> bytes:
        raise OSError(5, "Input/output error")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise StoreError(f"cannot list {self.root}/{prefix}: Input/output error")


def test_a_store_that_is_down_gets_503(tmp_path: Path) -> None:
    client = TestClient(create_app(Store(DownBackend(tmp_path))))
    for path in ("/v2/org/model/manifests/latest", f"/v2/org/model/blobs/sha256:{'0' * 64}", "/healthz", "/"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert errors_of(response) == ["UNAVAILABLE"] and response.headers["retry-after"].isdigit()
        assert str(tmp_path) not in response.text  # the cause is logged, not shown


def test_an_unreachable_s3_gets_503_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from botocore.config import Config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unreachable-secret")
    client_config = Config(connect_timeout=1, retries={"mode": "standard", "max_attempts": 1})
    s3 = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", config=client_config
    )
    client = TestClient(create_app(Store(S3Backend("models", "prod", client=s3)), metrics=Metrics()))
    response = client.get("/v2/org/model/manifests/latest")
    assert response.status_code == 503 and errors_of(response) == ["UNAVAILABLE"]
    assert "unreachable-secret" not in response.text and "AKIAUNREACHABLE" not in response.text


def test_a_blob_deleted_after_its_lookup_is_404(store: Store, image: BuiltImage) -> None:
    client = TestClient(create_app(store, RegistryConfig(cache_seconds=60)))
    path = f"/v2/{NAME}/blobs/{image.layer.digest}"
    assert client.head(path).status_code == 200  # its size is cached now
    store.backend.delete(blob_key(image.layer.digest))  # garbage-collected meanwhile
    response = client.get(path)
    assert response.status_code == 404 and errors_of(response) == ["BLOB_UNKNOWN"]
