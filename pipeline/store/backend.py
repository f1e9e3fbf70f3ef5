"""What a storage backend must do: bytes by key, with atomic writes. The layout lives in :mod:`.store`.

A key is a relative, '/'-separated path (``blobs/sha256/<hex>``); it means the same on disk and in a
bucket. Backends refuse keys that could escape their root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pipeline.errors import StoreError

UPLOADS_PREFIX = "uploads/"  # temporary objects of streaming uploads; `modelyard gc` sweeps stale ones


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # Unix time


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload a killed process left open: invisible to readers, yet stored (and billed)."""

    key: str
    upload_id: str
    started: float  # Unix time


class Upload(Protocol):
    """A streaming write to a temporary object, made visible under its final key by ``commit``."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def commit(self, key: str) -> None:
        """Make the bytes written so far appear, complete, under ``key``."""
        ...

    def abort(self) -> None:
        """Discard what was written. Safe to call after commit or twice."""
        ...


class Backend(Protocol):
    def exists(self) -> bool:
        """Whether the store has been written: its directory exists; its bucket holds objects under the prefix.

        A store that could not even be created (a bucket that does not exist) raises MissingStoreError.
        """
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of ``key``, or None when absent."""
        ...

    def read(self, key: str) -> bytes:
        """The whole object; raises NotFoundError when absent. For small objects."""
        ...

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``key``, in pieces of bounded size."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Write a small object atomically: readers see the old bytes or the new, never a part."""
        ...

    def upload(self) -> Upload:
        """Start a streaming upload (for layers, whose digest is known only at the end)."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def delete(self, key: str) -> None: ...

    def touch(self, key: str) -> None:
        """Make an existing object count as just written, so gc's grace period protects it again."""
        ...

    def incomplete_uploads(self) -> Iterator[IncompleteUpload]:
        """Streaming uploads started and never completed nor aborted (S3 multipart uploads)."""
        ...

    def abort_incomplete(self, upload: IncompleteUpload) -> None: ...

    def upload_in_progress(self, key: str) -> bool | None:
        """Whether a live process still writes the temporary ``key`` under ``uploads/``.

        True or False when the backend can tell (a local file's lock), None when it cannot (a bucket):
        then only the grace period says a temporary is stale.
        """
        ...

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A URL that lets anyone GET ``key`` for ``expires_in`` seconds, or None if the backend has none."""
        ...

    def url(self) -> str:
        """Where this backend stores, for messages (never with credentials)."""
        ...


def check_key(key: str) -> str:
    """Refuse a key that is absolute, empty, or has '.', '..' or empty components."""
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise StoreError(f"invalid store key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}")
    return key
