"""Publishing to S3 (a real moto server on 127.0.0.1): multipart streaming, faults, kills, convergence.

moto does not verify the SHA-256 checksums we send (AWS S3, R2 and MinIO do), so the refusal of a
corrupted transfer is injected as the BadDigest error S3 answers; what is tested is that we send a
checksum with every part and object, and that a refusal leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.errors import StoreError
from pipeline.oci.image import ImageMetadata
from pipeline.oci.references import reachable
from pipeline.store import Store, blob_key, open_store
from pipeline.store.gc import collect_garbage
from pipeline.store.s3 import S3Backend
from tests.conftest import with_formats
from tests.registry_fixtures import S3, moto_s3

MakeTree = Callable[[Mapping[str, bytes]], Path]
MiB = 1024 * 1024
METADATA = ImageMetadata(title="org/model")


def s3_store(prefix: str, client: Any = None) -> Store:
    return Store(S3Backend("models", prefix, client or boto3.session.Session().client("s3")))


def publish(store: Store, source: Path) -> Any:
    return build_and_publish(store, files_from_dir(source), name="org/model", tags=["latest"], metadata=METADATA)


def dangling(store: Store) -> dict[str, list[str]]:
    """Whatever a failed upload could leave: temporaries, open multipart uploads, tags."""
    return {
        "uploads": [i.key for i in store.backend.list("uploads/")],
        "multipart": [u.key for u in store.backend.incomplete_uploads()],
        "tags": store.tags("org/model"),
    }


NOTHING: dict[str, list[str]] = {"uploads": [], "multipart": [], "tags": []}


@pytest.fixture
def s3() -> Iterator[S3]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """moto keeps objects per process, not per server: each test writes under its own prefix."""
    return uuid.uuid4().hex


@pytest.fixture
def weights(tree: MakeTree) -> Path:
    # 20 MiB of incompressible bytes: a layer of three 8 MiB parts
    return tree({"config.json": b"{}", "model.safetensors": os.urandom(20 * MiB)})


def test_publish_streams_a_multipart_layer(s3: S3, weights: Path, prefix: str) -> None:
    store = open_store(f"s3://models/{prefix}")
    built = publish(store, weights)
    assert store.tags("org/model") == with_formats(["latest"])
    assert all(store.has_blob(d.digest) for d in reachable(store, built.index))
    client = boto3.session.Session().client("s3")
    head = client.head_object(Bucket="models", Key=f"{prefix}/{blob_key(built.layer.digest)}", ChecksumMode="ENABLED")
    assert head["ContentLength"] == built.layer.size and "ChecksumSHA256" in head
    body = b"".join(store.read_blob_range(built.layer.digest, 0, built.layer.size))
    assert len(body) == built.layer.size and store.read_blob(built.index.digest)
    assert dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}


def test_a_part_that_fails_aborts_the_upload(s3: S3, weights: Path, prefix: str) -> None:
    client = boto3.session.Session().client("s3")

    def fail_part_2(params: dict[str, Any], **kwargs: Any) -> None:
        if params.get("PartNumber") == 2:
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    client.meta.events.register("before-parameter-build.s3.UploadPart", fail_part_2)
    store = s3_store(prefix, client)
    with pytest.raises(StoreError, match="Could not connect"):
        publish(store, weights)
    assert dangling(store) == NOTHING and not list(store.backend.list("blobs/"))
    publish(s3_store(prefix), weights)  # and a re-run converges
    assert dangling(s3_store(prefix)) == {**NOTHING, "tags": with_formats(["latest"])}


def respond(status: int, body: bytes) -> Callable[..., AWSResponse | None]:
    """A before-send hook that answers the first request itself."""
    calls = []

    class Raw:
        def stream(self, **kwargs: Any) -> Any:
            yield body

    def hook(request: Any, **kwargs: Any) -> AWSResponse | None:
        calls.append(request)
        return AWSResponse(request.url, status, {}, Raw()) if len(calls) == 1 else None

    return hook


def test_a_server_error_is_retried(s3: S3, weights: Path, prefix: str) -> None:
    client = boto3.session.Session().client("s3")
    client.meta.events.register("before-send.s3.UploadPart", respond(500, b"<Error><Code>InternalError</Code></Error>"))
    store = s3_store(prefix, client)
    publish(store, weights)
    assert dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}


def test_a_refused_checksum_leaves_nothing(s3: S3, weights: Path, prefix: str) -> None:
    sent: list[dict[str, Any]] = []
    client = boto3.session.Session().client("s3")
    client.meta.events.register("before-parameter-build.s3.UploadPart", lambda params, **kw: sent.append(params))
    bad_digest = b"<Error><Code>BadDigest</Code><Message>The SHA256 you specified did not match</Message></Error>"
    client.meta.events.register("before-send.s3.UploadPart", respond(400, bad_digest))
    store = s3_store(prefix, client)
    with pytest.raises(StoreError, match="BadDigest"):
        publish(store, weights)
    assert sent and all(params.get("ChecksumSHA256") for params in sent)  # every part carries one
    assert dangling(store) == NOTHING
    publish(s3_store(prefix), weights)
    assert s3_store(prefix).tags("org/model") == with_formats(["latest"])


def test_killed_between_blobs_and_tag(s3: S3, weights: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "put_tag", killed)
        with pytest.raises(KeyboardInterrupt):
            publish(s3_store(prefix), weights)
    store = s3_store(prefix)
    assert store.get_tag("org/model", "latest") is None  # no tag, so nothing served points at missing content
    built = publish(store, weights)
    assert store.get_tag("org/model", "latest") == built.index


def test_sigkill_mid_upload_then_gc_and_rerun(s3: S3, tree: MakeTree, prefix: str) -> None:
    source = tree({"model.safetensors": os.urandom(96 * MiB)})
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "build",
        "--from-dir",
        str(source),
        "--name",
        "org/model",
        "--store",
        f"s3://models/{prefix}",
    ]
    process = subprocess.Popen(command, env={**os.environ, **s3.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = s3_store(prefix)
    deadline = time.monotonic() + 60
    while not list(store.backend.incomplete_uploads()):  # kill it while its multipart upload is open
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.tags("org/model") == [] and list(store.backend.incomplete_uploads())

    report = collect_garbage(store, grace=0)
    assert any(info.key.startswith("uploads/") for info in report.removed)
    assert list(store.backend.incomplete_uploads()) == [] and list(store.backend.list("uploads/")) == []

    rerun = subprocess.run(command, env={**os.environ, **s3.env}, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert store.tags("org/model") == with_formats(["latest"])
