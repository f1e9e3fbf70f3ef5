"""Publishing to S3 (a real moto server on 127.0.0.1): multipart streaming, faults, kills, convergence.

moto does not verify the SHA-256 checksums we send (AWS S3, R2 and MinIO do), so the refusal of a
corrupted transfer is injected as the BadDigest error S3 answers; what is tested is that we send a
checksum with every part and object, and that a refusal leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
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


def respond(status: int, body: bytes, nth: int = 1, and_after: bool = False) -> Callable[..., AWSResponse | None]:
    """A before-send hook that answers the ``nth`` request itself (and the later ones with ``and_after``);
    the others go to the server."""
    calls = []

    class Raw:
        def stream(self, **kwargs: Any) -> Any:
            yield body

    def hook(request: Any, **kwargs: Any) -> AWSResponse | None:
        calls.append(request)
        answered = len(calls) >= nth if and_after else len(calls) == nth
        return AWSResponse(request.url, status, {}, Raw()) if answered else None

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


# --- Completing a multipart upload: it can take minutes, and its answer can be lost ---------------------

NO_SUCH_UPLOAD = b"<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>"


def completions(client: Any) -> list[Any]:
    """Every CompleteMultipartUpload request ``client`` sends (each attempt)."""
    sent: list[Any] = []
    client.meta.events.register("before-send.s3.CompleteMultipartUpload", lambda request, **kw: sent.append(request))
    return sent


def test_a_completion_slower_than_the_request_timeout_is_waited_for(
    s3: S3, weights: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto assembles a multi-GiB upload for minutes; AWS documents completions that long. Ordinary
    # requests here give up after 1 s, and moto (in this process) takes 3 s to complete: only a client
    # with a long read timeout for completions gets through, in one attempt, without a retry.
    from moto.s3.models import S3Backend as MotoS3

    complete = MotoS3.complete_multipart_upload

    def slow(self: MotoS3, *args: Any, **kwargs: Any) -> Any:
        time.sleep(3)
        return complete(self, *args, **kwargs)

    monkeypatch.setattr(MotoS3, "complete_multipart_upload", slow)
    impatient = boto3.session.Session().client(
        "s3", config=Config(read_timeout=1, retries={"mode": "standard", "max_attempts": 2})
    )
    store = s3_store(prefix, impatient)
    sent = completions(store.backend.slow_client)  # type: ignore[attr-defined]
    built = publish(store, weights)
    assert len(sent) == 1
    assert store.read_blob(built.index.digest) and dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}


def test_a_completion_retried_after_it_was_done_is_accepted(s3: S3, weights: Path, prefix: str) -> None:
    # The first attempt completes the upload but its answer is lost (a read timeout, a reset): botocore
    # sends it again, and S3, which has forgotten the upload by then, answers NoSuchUpload.
    slow_client = boto3.session.Session().client("s3")
    sent = completions(slow_client)

    def lost_answer(attempts: int, **kwargs: Any) -> int | None:
        return 0 if attempts == 1 else None  # retry at once, as after a timeout

    slow_client.meta.events.register("needs-retry.s3.CompleteMultipartUpload", lost_answer)
    slow_client.meta.events.register("before-send.s3.CompleteMultipartUpload", respond(404, NO_SUCH_UPLOAD, nth=2))
    store = Store(S3Backend("models", prefix, boto3.session.Session().client("s3"), slow_client))
    built = publish(store, weights)
    assert len(sent) == 2
    body = b"".join(store.read_blob_range(built.layer.digest, 0, built.layer.size))
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == built.layer.digest
    assert dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}


@pytest.mark.parametrize("left", ["nothing", "another object"])
def test_a_completion_whose_upload_is_gone_fails_clearly(s3: S3, weights: Path, prefix: str, left: str) -> None:
    # NoSuchUpload and no object of the parts' size and checksum under the temporary key: the upload was
    # aborted meanwhile (gc, a lifecycle rule); nothing may be published.
    other = boto3.session.Session().client("s3")
    slow_client = boto3.session.Session().client("s3")

    def gone(request: Any, **kwargs: Any) -> AWSResponse | None:
        if left == "another object":
            other.put_object(Bucket="models", Key=urlsplit(request.url).path.split("/", 2)[2], Body=b"x" * 100)
        return respond(404, NO_SUCH_UPLOAD)(request)

    slow_client.meta.events.register("before-send.s3.CompleteMultipartUpload", gone)
    store = Store(S3Backend("models", prefix, boto3.session.Session().client("s3"), slow_client))
    expected = "no object was made from it" if left == "nothing" else "the object there is 100 bytes"
    with pytest.raises(StoreError, match=rf"upload is gone \(NoSuchUpload\) and {expected}.*expected \d+ bytes"):
        publish(store, weights)
    assert dangling(store) == NOTHING and not list(store.backend.list("blobs/"))
    publish(s3_store(prefix), weights)  # a re-run converges
    assert dangling(s3_store(prefix)) == {**NOTHING, "tags": with_formats(["latest"])}


def test_a_completion_answered_200_with_an_error_is_retried(s3: S3, weights: Path, prefix: str) -> None:
    # AWS documents that CompleteMultipartUpload can answer 200 and put the error in the body.
    slow_client = boto3.session.Session().client("s3")
    sent = completions(slow_client)
    error = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"
    slow_client.meta.events.register("before-send.s3.CompleteMultipartUpload", respond(200, error))
    store = Store(S3Backend("models", prefix, boto3.session.Session().client("s3"), slow_client))
    publish(store, weights)
    assert len(sent) == 2 and dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}


def test_a_copy_that_fails_after_it_was_done_is_accepted(s3: S3, weights: Path, prefix: str) -> None:
    # The copy under the digest happened but its answer was lost, and the retry failed: a copy appears
    # whole or not at all, so an object of the temporary's size under the digest is the copy.
    slow_client = boto3.session.Session().client("s3", config=Config(retries={"mode": "standard", "max_attempts": 2}))
    sent = []
    slow_client.meta.events.register("before-send.s3.CopyObject", lambda request, **kw: sent.append(request))
    slow_client.meta.events.register("needs-retry.s3.CopyObject", lambda attempts, **kw: 0 if attempts == 1 else None)
    error = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"
    slow_client.meta.events.register("before-send.s3.CopyObject", respond(500, error, nth=2, and_after=True))
    store = Store(S3Backend("models", prefix, boto3.session.Session().client("s3"), slow_client))
    built = publish(store, weights)
    assert len(sent) >= 2  # the copy, then retries answered 500
    assert store.backend.stat(blob_key(built.layer.digest)).size == built.layer.size  # type: ignore[union-attr]
    assert dangling(store) == {**NOTHING, "tags": with_formats(["latest"])}
