"""The store layout of DESIGN §3, the contract between the pipeline and the registry front-end.

    blobs/sha256/<hex>                    every content-addressed object (layers, configs, manifests, indexes)
    repositories/<name>/tags/<tag>        JSON descriptor {"mediaType", "digest", "size"} of what the tag points at
    catalog/<name>.json                   the catalog record the site is rendered from
    failures/<name>.json                  why the last build of a model failed (removed when it publishes)
    site/...                              the rendered website
    uploads/...                           temporaries of streaming uploads (not part of the contract)

Blobs appear only complete and only under their true digest; a tag is written only once what it
points at is there.

Example::

    store = open_store("store")                      # or "s3://bucket/prefix"
    with store.blob_writer() as blob:
        blob.write(b"hello")
        digest = blob.commit()
    store.put_tag("org/model", "latest", descriptor)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from pipeline.digest import HashingWriter, hex_of, sha256_digest
from pipeline.errors import IntegrityError, NotFoundError, StoreError
from pipeline.names import check_name, check_tag
from pipeline.oci.image import Descriptor, canonical_json
from pipeline.store.backend import Backend, Upload

BLOBS_PREFIX = "blobs/sha256/"
REPOSITORIES_PREFIX = "repositories/"
CATALOG_PREFIX = "catalog/"
FAILURES_PREFIX = "failures/"
SITE_PREFIX = "site/"
_TAGS_DIR = "/tags/"


def blob_key(digest: str) -> str:
    return BLOBS_PREFIX + hex_of(digest)


def tag_key(name: str, tag: str) -> str:
    return f"{REPOSITORIES_PREFIX}{check_name(name)}{_TAGS_DIR}{check_tag(tag)}"


def catalog_key(name: str) -> str:
    return f"{CATALOG_PREFIX}{check_name(name)}.json"


def failure_key(name: str) -> str:
    return f"{FAILURES_PREFIX}{check_name(name)}.json"


class BlobWriter(HashingWriter):
    """Streams a blob into a temporary object; ``commit`` files it under its digest.

    Used as a context manager, it aborts the upload unless committed, so an error leaves nothing behind.
    """

    def __init__(self, store: Store, upload: Upload) -> None:
        super().__init__(upload)  # type: ignore[arg-type]
        self._store = store
        self._upload = upload
        self.committed = False

    def commit(self, expected: str | None = None) -> str:
        """Publish the blob under its sha256 digest and return that digest.

        With ``expected``, a different digest is an :class:`IntegrityError` and nothing is published.
        """
        digest = self.digest
        if expected is not None and expected != digest:
            self._upload.abort()
            raise IntegrityError(f"blob digest is {digest}, expected {expected}; not stored")
        if self._store.has_blob(digest):
            self._upload.abort()  # blobs are immutable: the one already there has these very bytes
            self._store.refresh_blob(digest)
        else:
            self._upload.commit(blob_key(digest))
        self.committed = True
        return digest

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if not self.committed:
            self._upload.abort()


class Store:
    """A store: the layout on top of a backend (local directory or S3 bucket)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return f"Store({self.backend.url()!r})"

    # blobs

    def has_blob(self, digest: str) -> bool:
        return self.backend.stat(blob_key(digest)) is not None

    def blob_size(self, digest: str) -> int | None:
        info = self.backend.stat(blob_key(digest))
        return None if info is None else info.size

    def read_blob(self, digest: str) -> bytes:
        """A whole (small) blob, checked against its digest."""
        data = self.backend.read(blob_key(digest))
        if sha256_digest(data) != digest:
            raise IntegrityError(f"blob {digest} in {self.backend.url()} does not match its digest")
        return data

    def read_json_blob(self, digest: str) -> dict[str, Any]:
        value = json.loads(self.read_blob(digest))
        if not isinstance(value, dict):
            raise StoreError(f"blob {digest} is not a JSON object")
        return value

    def put_blob(self, data: bytes) -> str:
        """Store a small blob (a config, manifest or index) unless it is already there."""
        digest = sha256_digest(data)
        if self.has_blob(digest):
            self.refresh_blob(digest)
        else:
            self.backend.write(blob_key(digest), data)
        return digest

    def refresh_blob(self, digest: str) -> None:
        """Mark a reused blob as just written: gc spares it until the tag about to reference it lands."""
        self.backend.touch(blob_key(digest))

    def blob_writer(self) -> BlobWriter:
        return BlobWriter(self, self.backend.upload())

    def read_blob_range(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        return self.backend.read_range(blob_key(digest), start, end)

    def presigned_blob_url(self, digest: str, expires_in: int) -> str | None:
        """A time-limited URL to GET the blob directly from the backend (S3), or None (local)."""
        return self.backend.presigned_url(blob_key(digest), expires_in)

    # tags

    def get_tag(self, name: str, tag: str) -> Descriptor | None:
        try:
            data = self.backend.read(tag_key(name, tag))
        except NotFoundError:
            return None
        return Descriptor.from_json(json.loads(data))

    def put_tag(self, name: str, tag: str, descriptor: Descriptor) -> None:
        """Point ``name:tag`` at ``descriptor``, which must already be stored (tags are written last)."""
        if not self.has_blob(descriptor.digest):
            raise StoreError(f"refusing to tag {name}:{tag}: {descriptor.digest} is not in the store")
        plain = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size)
        self.backend.write(tag_key(name, tag), canonical_json(plain.to_json()))

    def delete_tag(self, name: str, tag: str) -> None:
        self.backend.delete(tag_key(name, tag))

    def tags(self, name: str) -> list[str]:
        prefix = f"{REPOSITORIES_PREFIX}{check_name(name)}{_TAGS_DIR}"
        return sorted(
            info.key[len(prefix) :] for info in self.backend.list(prefix) if "/" not in info.key[len(prefix) :]
        )

    def repositories(self) -> list[str]:
        names = set()
        for info in self.backend.list(REPOSITORIES_PREFIX):
            name, sep, _ = info.key[len(REPOSITORIES_PREFIX) :].rpartition(_TAGS_DIR)
            if sep:
                names.add(name)
        return sorted(names)

    # catalog

    def put_catalog(self, name: str, record: dict[str, Any]) -> None:
        self.backend.write(catalog_key(name), canonical_json(record))

    def catalog_names(self) -> list[str]:
        """Names that have a catalog record (a record can outlive its tags)."""
        keys = (info.key for info in self.backend.list(CATALOG_PREFIX))
        return sorted(key[len(CATALOG_PREFIX) : -len(".json")] for key in keys if key.endswith(".json"))

    def get_catalog(self, name: str) -> dict[str, Any] | None:
        return self._get_record(catalog_key(name))

    # build failures: what `plan` reports as "previously failed" and the site shows as "failed"

    def put_failure(self, name: str, record: dict[str, Any]) -> None:
        """Record why the last build of ``name`` failed; it stays until the model publishes."""
        self.backend.write(failure_key(name), canonical_json(record))

    def get_failure(self, name: str) -> dict[str, Any] | None:
        return self._get_record(failure_key(name))

    def delete_failure(self, name: str) -> None:
        self.backend.delete(failure_key(name))

    def _get_record(self, key: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self.backend.read(key))
        except NotFoundError:
            return None
        return value if isinstance(value, dict) else None
