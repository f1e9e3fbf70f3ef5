"""The S3 backend (boto3): AWS S3, Cloudflare R2, MinIO, or any S3-compatible endpoint.

Configuration comes from the standard AWS sources (environment, ``~/.aws/config``): credentials, region,
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for R2/MinIO, and ``s3.addressing_style``.

Streaming uploads (layers, whose digest is known only at the end) go to a temporary key under
``uploads/`` as a multipart upload; ``commit`` copies the object server-side to its final key (a
multipart copy above 5 GiB, by boto3's transfer manager) and deletes the temporary. An incomplete
object is therefore never visible under a digest key; a failed upload is aborted; `modelyard gc`
sweeps temporaries left by a killed process. Every part and object carries a SHA-256 checksum that
the server verifies, so a corrupted transfer is refused.

Completing a multipart upload and copying an object happen on the server and can take minutes for a
multi-GiB layer (AWS documents both; moto assembles the parts in memory), so those calls go through a
second client whose read timeout is long (:data:`SLOW_READ_TIMEOUT`); every other request keeps
botocore's 60 s, so a stalled part upload is retried soon. A completion retried after its first attempt
did complete (its response was lost) may answer NoSuchUpload: the temporary object is then checked for
the size and SHA-256 composite checksum of the parts sent, and accepted when it matches.

Example::

    backend = S3Backend.from_url("s3://models/prod")
    backend.write("repositories/gpt2/tags/latest", b"{...}")
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import MissingStoreError, NotFoundError, StoreError
from pipeline.store.backend import UPLOADS_PREFIX, IncompleteUpload, ObjectInfo, check_key

MIN_PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
PARTS_PER_SIZE_STEP = 1_000  # part size doubles every 1,000 parts: 10,000 parts then hold > 5 TB
UPLOAD_CONCURRENCY = 4
READ_PIECE = 1024 * 1024
COPY_OBJECT_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects are copied in parts
SLOW_READ_TIMEOUT = 20 * 60  # seconds to wait for the answer of a completion or a server-side copy
# Operations that work on a whole object server-side before answering: the slow client's.
SLOW_OPERATIONS = frozenset({"complete_multipart_upload", "copy_object", "upload_part_copy"})
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_RETRIES = {"mode": "standard", "max_attempts": 5}
# Every body we send carries a signed x-amz-checksum-sha256 header the server checks, which is why
# botocore skips hashing the payload for the signature over HTTPS; over plain HTTP (MinIO, moto on
# 127.0.0.1) it would hash every byte of a layer once more, for nothing.
_S3_OPTIONS = {"payload_signing_enabled": False}


def _checksum(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def composite_checksum(part_checksums: list[str]) -> str:
    """The SHA-256 checksum S3 gives an object made of parts: the digest of the parts' digests, then ``-N``."""
    digests = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{_checksum(digests)}-{len(part_checksums)}"


def error_code(err: BaseException) -> str:
    """The S3 error code behind a StoreError raised by :meth:`S3Backend.call` ("" if it was not S3's answer)."""
    cause = err.__cause__
    return str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""


def part_size(part_number: int) -> int:
    """Size of part ``part_number`` (1-based) when the total size is unknown in advance."""
    return MIN_PART_SIZE << ((part_number - 1) // PARTS_PER_SIZE_STEP)


class S3Upload:
    """A multipart upload to a temporary key, uploading parts concurrently as they fill."""

    def __init__(self, backend: S3Backend) -> None:
        self._backend = backend
        self.temp_key = f"{UPLOADS_PREFIX}{uuid.uuid4().hex}.part"
        self._part = bytearray()  # the part being filled; sent as it is, then replaced by a new one
        self._upload_id: str | None = None
        self._parts: deque[Future[dict[str, Any]]] = deque()
        self._done_parts: list[dict[str, Any]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._finished = False
        self._size = 0  # bytes written so far

    def write(self, data: bytes | bytearray | memoryview) -> int:
        # Each byte is copied once, into its part: a layer's bytes pass here at network speed.
        view = memoryview(data).cast("B")
        size = view.nbytes
        while view:
            room = part_size(self._next_part_number()) - len(self._part)
            self._part += view[:room]
            view = view[room:]
            if len(self._part) == part_size(self._next_part_number()):
                self._send_part(self._part)
                self._part = bytearray()
        self._size += size
        return size

    def _next_part_number(self) -> int:
        return len(self._done_parts) + len(self._parts) + 1

    def _send_part(self, data: bytearray) -> None:
        backend = self._backend
        if self._upload_id is None:
            response = backend.call(
                "create_multipart_upload",
                self.temp_key,
                ChecksumAlgorithm="SHA256",
            )
            self._upload_id = str(response["UploadId"])
            self._pool = ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="s3-part")
        number = self._next_part_number()
        if number > MAX_PARTS:
            raise StoreError(f"upload to {backend.url()} exceeds {MAX_PARTS} parts")
        assert self._pool is not None
        self._parts.append(self._pool.submit(self._upload_part, number, data))
        # Bound memory: at most UPLOAD_CONCURRENCY parts in flight.
        while len(self._parts) > UPLOAD_CONCURRENCY:
            self._done_parts.append(self._parts.popleft().result())

    def _upload_part(self, number: int, data: bytearray) -> dict[str, Any]:
        checksum = _checksum(data)
        response = self._backend.call(
            "upload_part",
            self.temp_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def commit(self, key: str) -> None:
        backend = self._backend
        try:
            if self._upload_id is None:
                # Small enough for one request: no temporary needed, the put is atomic.
                backend.write(key, bytes(self._part))
            else:
                if self._part:
                    self._send_part(self._part)
                    self._part = bytearray()
                while self._parts:
                    self._done_parts.append(self._parts.popleft().result())
                self._complete()
                self._upload_id = None
                backend.copy(self.temp_key, key)
                backend.delete(self.temp_key)
        except BaseException:
            self.abort()
            raise
        finally:
            self._close_pool()
        self._finished = True

    def _complete(self) -> None:
        """CompleteMultipartUpload, made idempotent: a retry that finds the upload gone checks what it made."""
        try:
            self._backend.call(
                "complete_multipart_upload",
                self.temp_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._done_parts},
            )
        except StoreError as err:
            if error_code(err) != "NoSuchUpload":
                raise
            # Either an earlier attempt of this very call completed it (its answer was lost) and S3
            # has forgotten the upload, or it was aborted (gc, a lifecycle rule). The temporary key is
            # ours alone, so an object there with the parts' size and checksum is our completed upload.
            expected = composite_checksum([part["ChecksumSHA256"] for part in self._done_parts])
            problem = self._completed_object_problem(expected)
            if problem:
                raise StoreError(
                    f"S3 complete_multipart_upload {self.temp_key} in {self._backend.url()} failed: the upload is "
                    f"gone (NoSuchUpload) and {problem}; expected {self._size} bytes with SHA-256 checksum "
                    f"{expected}. Run the build again"
                ) from err

    def _completed_object_problem(self, expected_checksum: str) -> str:
        """What is wrong with the temporary object, or "" if it is what completing the upload makes."""
        try:
            head = self._backend.call("head_object", self.temp_key, ChecksumMode="ENABLED")
        except NotFoundError:
            return "no object was made from it (aborted by `modelyard gc` or a lifecycle rule?)"
        size = int(head["ContentLength"])
        # S3 writes a composite checksum with its part count ("…=-3"), moto without; R2 may give none.
        checksum = str(head.get("ChecksumSHA256") or "")
        if size != self._size or (checksum and checksum.split("-")[0] != expected_checksum.split("-")[0]):
            return f"the object there is {size} bytes with SHA-256 checksum {checksum or '(none)'}"
        return ""

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        for future in self._parts:
            future.cancel()
        self._close_pool()
        backend = self._backend
        try:
            if self._upload_id is not None:
                backend.call("abort_multipart_upload", self.temp_key, UploadId=self._upload_id)
            backend.delete(self.temp_key)
        except StoreError:
            pass  # best effort: gc sweeps what could not be cleaned now

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class S3Backend:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, slow_client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._slow_client = slow_client
        self._session: boto3.session.Session | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, client: Any = None, slow_client: Any = None) -> S3Backend:
        """The backend of ``s3://bucket[/prefix]``.

        ``client`` replaces the default boto3 client (timeouts, retries); ``slow_client`` the one for
        the operations in :data:`SLOW_OPERATIONS`, which need a long read timeout. Each defaults to a
        client configured from the environment.
        """
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"{url!r} names no bucket; expected s3://bucket[/prefix]")
        return cls(bucket, prefix, client, slow_client)

    @property
    def client(self) -> Any:
        """The client of ordinary requests: botocore's 60 s read timeout, 5 attempts."""
        with self._lock:
            if self._client is None:
                config = Config(retries=_RETRIES, max_pool_connections=32, s3=_S3_OPTIONS)
                self._client = self._boto_session().client("s3", config=config)
            return self._client

    @property
    def slow_client(self) -> Any:
        """The client of completions and server-side copies, which answer only once the work is done."""
        with self._lock:
            if self._slow_client is None:
                config = Config(
                    read_timeout=SLOW_READ_TIMEOUT,
                    retries=_RETRIES,
                    max_pool_connections=32,  # a multipart copy sends 10 parts at once
                    s3=_S3_OPTIONS,
                )
                self._slow_client = self._boto_session().client("s3", config=config)
            return self._slow_client

    def _boto_session(self) -> boto3.session.Session:
        # One session for both clients: they share its loaded service model (tens of MB each otherwise).
        if self._session is None:
            self._session = boto3.session.Session()
        return self._session

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def call(self, operation: str, key: str, **kwargs: Any) -> Any:
        """Call an S3 operation on ``key``, turning failures into StoreError (never showing credentials)."""
        client = self.slow_client if operation in SLOW_OPERATIONS else self.client
        try:
            return getattr(client, operation)(Bucket=self.bucket, Key=self.object_key(key), **kwargs)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise NotFoundError(f"{key} is not in {self.url()}") from err
            message = err.response.get("Error", {}).get("Message", "")
            raise StoreError(f"S3 {operation} {key} in {self.url()} failed: {code} {message}".rstrip()) from err
        except BotoCoreError as err:
            raise StoreError(f"S3 {operation} {key} in {self.url()} failed: {err}") from err

    def exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            base = f"{self.prefix}/" if self.prefix else ""
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, MaxKeys=1)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                endpoint = self.client.meta.endpoint_url
                raise MissingStoreError(
                    f"no bucket {self.bucket!r} at {endpoint}: create it first, or check --store and AWS_ENDPOINT_URL"
                ) from err
            raise StoreError(f"S3 cannot read bucket {self.bucket!r} ({self.url()}): {code}") from err
        except BotoCoreError as err:
            raise StoreError(f"S3 cannot reach {self.url()}: {err}") from err
        return bool(listed.get("KeyCount", 0))

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            response = self.call("head_object", key)
        except NotFoundError:
            return None
        return ObjectInfo(key, int(response["ContentLength"]), response["LastModified"].timestamp())

    def read(self, key: str) -> bytes:
        response = self.call("get_object", key)
        return bytes(response["Body"].read())

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        response = self.call("get_object", key, Range=f"bytes={start}-{end - 1}")
        body = response["Body"]
        try:
            yield from body.iter_chunks(READ_PIECE)
        finally:
            body.close()

    def write(self, key: str, data: bytes) -> None:
        self.call("put_object", key, Body=data, ChecksumSHA256=_checksum(data))

    def upload(self) -> S3Upload:
        return S3Upload(self)

    def copy(self, source: str, target: str) -> None:
        """Server-side copy (multipart above 5 GiB), keeping the SHA-256 checksum."""
        try:
            self.slow_client.copy(
                {"Bucket": self.bucket, "Key": self.object_key(source)},
                self.bucket,
                self.object_key(target),
                ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                Config=TransferConfig(multipart_threshold=COPY_OBJECT_LIMIT, multipart_chunksize=512 * 1024**2),
            )
        except (ClientError, BotoCoreError) as err:
            if source != target and self._copied(source, target):
                return
            raise StoreError(f"S3 copy {source} to {target} in {self.url()} failed: {err}") from err

    def _copied(self, source: str, target: str) -> bool:
        """Whether ``target`` holds a copy of ``source`` after all: a copy retried once it was done (its
        answer lost) can fail, a multipart copy's completion with NoSuchUpload. A copy appears whole or
        not at all, so a target of the source's size is the copy."""
        try:
            copied, original = self.stat(target), self.stat(source)
        except StoreError:
            return False
        return copied is not None and original is not None and copied.size == original.size

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(base) :]
                    yield ObjectInfo(key, int(item["Size"]), item["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"S3 list {prefix} in {self.url()} failed: {err}") from err

    def delete(self, key: str) -> None:
        self.call("delete_object", key)

    def touch(self, key: str) -> None:
        """Rewrite the object onto itself, server-side, for a new LastModified."""
        info = self.stat(key)
        if info is None:
            raise NotFoundError(f"{key} is not in {self.url()}")
        if info.size <= COPY_OBJECT_LIMIT:
            source = {"Bucket": self.bucket, "Key": self.object_key(key)}
            self.call("copy_object", key, CopySource=source, MetadataDirective="REPLACE", ChecksumAlgorithm="SHA256")
        else:
            self.copy(key, key)  # a multipart copy makes a new object, hence a new time

    def incomplete_uploads(self) -> Iterator[IncompleteUpload]:
        """Multipart uploads never completed: streaming uploads under uploads/, and multipart copies of
        layers over 5 GiB to their digest key (a kill during the copy leaves one under blobs/)."""
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base)
            for page in pages:
                for upload in page.get("Uploads", []):
                    yield IncompleteUpload(
                        upload["Key"][len(base) :], upload["UploadId"], upload["Initiated"].timestamp()
                    )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"S3 list incomplete uploads in {self.url()} failed: {err}") from err

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        self.call("abort_multipart_upload", upload.key, UploadId=upload.upload_id)

    def upload_in_progress(self, key: str) -> None:
        return None  # a bucket cannot tell whether the writer lives: the grace period decides

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A presigned GET URL (signed locally, no request made). It names the access key id, as SigV4 does."""
        try:
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_in
            )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"cannot presign {key} in {self.url()}: {err}") from err
        return str(url)
