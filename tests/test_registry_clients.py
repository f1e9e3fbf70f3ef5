"""Real clients against a real `modelyard serve`, over the local store and over S3 (moto).

skopeo inspects and copies, oras fetches, buildah builds with ``COPY --from``, and the reference
eStargz reader reads one file lazily; every digest is checked. Each server binds 127.0.0.1 on a free
port and is stopped when its tests end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.build.publish import BuiltImage
from pipeline.oci.image import MEDIA_TYPE_INDEX, canonical_json
from pipeline.store import Store, open_store
from tests.conftest import require_tool, run
from tests.registry_fixtures import (
    NAME,
    S3_KEY_ID,
    S3_SECRET,
    RunningRegistry,
    moto_s3,
    publish,
    running_registry,
    small_model_files,
)

BIG = "org/big"
BIG_WEIGHTS = 6 * 1024 * 1024


@dataclass
class Served:
    backend: str  # "local" or "s3"
    location: str
    store: Store
    registry: RunningRegistry
    image: BuiltImage
    files: dict[str, bytes]
    big: BuiltImage
    env: dict[str, str]  # what a process needs to reach the store

    def ref(self, name: str = NAME, tag: str = "latest") -> str:
        return f"docker://{self.registry.host}/{name}:{tag}"


@pytest.fixture(scope="module", params=["local", "s3"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A small and a multi-MiB image in a store of each kind, served by `modelyard serve`."""
    workdir = tmp_path_factory.mktemp(f"served-{request.param}")
    with moto_s3() if request.param == "s3" else contextlib.nullcontext() as s3:
        location = "s3://models/prod" if s3 is not None else str(workdir / "store")
        env = s3.env if s3 is not None else {}
        store = open_store(location)
        files = small_model_files()
        image = publish(store, workdir / "model", files)
        big = publish(store, workdir / "big", {"config.json": b'{"big": true}', "w.bin": os.urandom(BIG_WEIGHTS)}, BIG)
        with running_registry(location, workdir / "server", env=env) as registry:
            yield Served(request.param, location, store, registry, image, files, big, env)
            logs = registry.logs()
        assert S3_SECRET not in logs and S3_KEY_ID not in logs


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_skopeo_inspect(served: Served) -> None:
    skopeo = require_tool("skopeo")
    raw = run(skopeo, "inspect", "--tls-verify=false", "--raw", served.ref()).stdout
    assert raw.encode() == served.store.read_blob(served.image.index.digest)
    assert json.loads(raw)["mediaType"] == MEDIA_TYPE_INDEX
    for blob in served.image.image.configs:
        arch = json.loads(blob.data)["architecture"]
        config = run(skopeo, "--override-arch", arch, "inspect", "--tls-verify=false", "--config", served.ref()).stdout
        assert json.loads(config) == json.loads(blob.data)
        info = json.loads(run(skopeo, "--override-arch", arch, "inspect", "--tls-verify=false", served.ref()).stdout)
        assert info["Architecture"] == arch and info["Layers"] == [served.image.layer.digest]


def test_skopeo_copy_to_oci_layouts(served: Served, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    one = tmp_path / "one"
    run(skopeo, "copy", "--src-tls-verify=false", served.ref(), f"oci:{one}:latest")
    copied = {p.name for p in (one / "blobs" / "sha256").iterdir()}
    assert served.image.layer.digest.removeprefix("sha256:") in copied
    every = tmp_path / "all"
    run(skopeo, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", served.ref(), f"oci:{every}:latest")
    blobs = every / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert sha256_hex(blob.read_bytes()) == blob.name
    (entry,) = json.loads((every / "index.json").read_bytes())["manifests"]
    assert entry["digest"] == served.image.index.digest  # the index itself, verbatim
    expected = {served.image.index.digest, served.image.layer.digest}
    expected |= {b.descriptor.digest for b in (*served.image.image.manifests, *served.image.image.configs)}
    assert {f"sha256:{p.name}" for p in blobs.iterdir()} == expected  # both platforms


def test_oras_fetches_manifests_and_blobs(served: Served) -> None:
    import oras.client

    client = oras.client.OrasClient(hostname=served.registry.host, insecure=True)
    target = f"{served.registry.host}/{NAME}"
    index = client.get_manifest(f"{target}:latest", allowed_media_type=[MEDIA_TYPE_INDEX])
    assert "sha256:" + sha256_hex(canonical_json(index)) == served.image.index.digest  # stored JSON is canonical
    for descriptor in index["manifests"]:
        manifest = client.get_manifest(f"{target}@{descriptor['digest']}")
        assert "sha256:" + sha256_hex(canonical_json(manifest)) == descriptor["digest"]
        for blob in (manifest["config"], *manifest["layers"]):
            response = client.get_blob(f"{target}:latest", blob["digest"])
            assert response.status_code == 200
            assert "sha256:" + sha256_hex(response.content) == blob["digest"]
            assert len(response.content) == blob["size"]


def buildah_build(served: Served, workdir: Path, dockerfile: str) -> Path:
    """Build ``dockerfile`` with buildah (vfs, chroot) and return the built filesystem."""
    buildah = require_tool("buildah")
    context = workdir / "context"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile)
    output = workdir / "rootfs"
    run(
        buildah,
        "--storage-driver",
        "vfs",
        "--root",
        str(workdir / "root"),
        "--runroot",
        str(workdir / "runroot"),
        "build",
        "--isolation",
        "chroot",
        "--tls-verify=false",
        "--output",
        f"type=local,dest={output}",
        str(context),
    )
    return output


def test_buildah_copy_from_one_file(served: Served, tmp_path: Path) -> None:
    rootfs = buildah_build(
        served, tmp_path, f"FROM scratch\nCOPY --from={served.registry.host}/{NAME} /config.json /config.json\n"
    )
    assert (rootfs / "config.json").read_bytes() == served.files["config.json"]


def test_buildah_copy_from_the_whole_tree(served: Served, tmp_path: Path) -> None:
    rootfs = buildah_build(
        served, tmp_path, f"FROM scratch\nCOPY --from={served.registry.host}/{NAME}:latest / /model/\n"
    )
    built = {
        path.relative_to(rootfs / "model").as_posix(): path.read_bytes()
        for path in (rootfs / "model").rglob("*")
        if path.is_file()
    }
    assert built == served.files  # byte-identical, and no stargz.index.json in the image


def test_lazy_read_of_one_file_fetches_under_one_percent(served: Served) -> None:
    tool = require_tool("estargz-ref")
    url = f"{served.registry.url}/v2/{BIG}/blobs/{served.big.layer.digest}"
    result = run(tool, "lazyread", url, "config.json", "--toc-digest", served.big.layer.toc_digest)
    report = json.loads(result.stdout)
    assert report["ok"] and report["digest_matches_toc"] and report["toc_digest_verified"]
    assert report["sha256"] == "sha256:" + sha256_hex(b'{"big": true}')
    assert report["blob_size"] == served.big.layer.size > BIG_WEIGHTS
    assert report["bytes_fetched"] < served.big.layer.size / 100


def test_hostile_raw_requests_get_4xx_json(served: Served) -> None:
    host, port = served.registry.host.split(":")
    requests = [
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(10_000)) + b"\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /v2/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v2/{NAME}/blobs/{served.image.layer.digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=".encode()
        + b"1-2," * 3000
        + b"\r\n\r\n",
    ]
    for request in requests:
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(request)
            answer, _ = read_response(connection)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
        assert b"content-type: application/json" in answer.lower()
    assert httpx.get(f"{served.registry.url}/v2/").status_code == 200  # still serving


@pytest.mark.parametrize("served", ["s3"], indirect=True)  # presigned URLs are an S3 feature
def test_presigned_redirects_for_whole_blobs_only(served: Served, tmp_path: Path) -> None:
    with running_registry(served.location, tmp_path, "--presign-seconds", "60", env=served.env) as registry:
        url = f"{registry.url}/v2/{NAME}/blobs/{served.image.layer.digest}"
        redirect = httpx.get(url)
        assert redirect.status_code == 307
        assert redirect.headers["location"].startswith(served.env["AWS_ENDPOINT_URL"])
        assert S3_SECRET not in redirect.headers["location"]  # signed with it, never showing it
        followed = httpx.get(url, follow_redirects=True)
        assert "sha256:" + sha256_hex(followed.content) == served.image.layer.digest
        ranged = httpx.get(url, headers={"Range": "bytes=0-9,20-29"})
        assert ranged.status_code == 206 and ranged.headers["content-type"].startswith("multipart/byteranges")
        logs = registry.logs()
    assert S3_SECRET not in logs and S3_KEY_ID not in logs


def test_the_real_server_logs_a_json_line_per_request(served: Served) -> None:
    def logged() -> list[tuple[str, int]]:
        return [(line["path"], line["status"]) for line in served.registry.access_log()]

    time.sleep(0.3)  # let earlier lines reach the log: they are written in batches
    before = len(logged())
    paths = [f"/v2/{NAME}/manifests/latest", "/v2/org/missing/tags/list", "/healthz"]
    for path in paths:
        httpx.get(served.registry.url + path)
    deadline = time.monotonic() + 5
    while len(logged()) < before + len(paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged()[before:] == [(paths[0], 200), (paths[1], 404), (paths[2], 200)]
    metrics = httpx.get(served.registry.url + "/metrics").text
    assert f'modelyard_pulls_total{{repository="{NAME}",tag="latest"}}' in metrics


@pytest.mark.parametrize("served", ["local"], indirect=True)
def test_a_large_blob_streams_in_constant_memory(served: Served) -> None:
    size = 256 * 1024 * 1024
    piece = os.urandom(1024 * 1024)
    with served.store.blob_writer() as writer:
        for index in range(size // len(piece)):
            writer.write(piece[index:] + piece[:index])  # no two pieces alike
        digest = writer.commit()
    received = hashlib.sha256()
    with httpx.stream("GET", f"{served.registry.url}/v2/{NAME}/blobs/{digest}", timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-length"] == str(size)
        for chunk in response.iter_bytes():
            received.update(chunk)
    assert "sha256:" + received.hexdigest() == digest
    status = Path(f"/proc/{served.registry.process.pid}/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    # The server idles at about 50 MB; a blob held in memory would add its 256 MiB.
    assert peak_kib * 1024 < 100e6, f"the server's peak RSS was {peak_kib} KiB while streaming {size} bytes"


def test_s3_going_down_gets_503_with_retry_after(tmp_path: Path) -> None:
    with moto_s3() as s3:
        publish(open_store("s3://models/down"), tmp_path / "model", {"config.json": b"{}"})
        with running_registry("s3://models/down", tmp_path / "server", "--cache-seconds", "0", env=s3.env) as registry:
            manifest = f"{registry.url}/v2/{NAME}/manifests/latest"
            assert httpx.get(manifest).status_code == 200
            s3.server.stop()
            started = time.monotonic()
            for path in (manifest, f"{registry.url}/v2/{NAME}/tags/list", f"{registry.url}/healthz"):
                response = httpx.get(path, timeout=30)
                assert response.status_code == 503 and response.headers["retry-after"].isdigit(), path
                assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert time.monotonic() - started < 15  # short timeouts and few retries: clients hear soon
            logs = registry.logs()
    assert "store unavailable" in logs and S3_SECRET not in logs and S3_KEY_ID not in logs


@pytest.mark.parametrize("served", ["local"], indirect=True)
def test_an_upload_gets_one_405_however_large_its_body(served: Served) -> None:
    host, port = served.registry.host.split(":")
    body = b"x" * (1024 * 1024)  # far past the bound on request heads: a body is no head
    head = f"PUT /v2/{NAME}/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode())
        refused, rest = read_response(connection)
        assert refused.startswith(b"HTTP/1.1 405 ")  # refused before the body is read
        connection.sendall(body + b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = rest
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")  # the next request on the connection, not a 431


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """One whole HTTP response (head and Content-Length body), and whatever arrived after it.

    A response's head and body may arrive in separate reads; the next response must not be mistaken
    for the rest of this one.
    """
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length: *([0-9]+)", head)
    assert match, f"no Content-Length in {head!r}"
    length = int(match[1])
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body[:length], body[length:]
