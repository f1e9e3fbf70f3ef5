"""Content digests: the one place that hashes a stream and checks a ``sha256:<hex>`` string.

Example::

    >>> sha256_digest(b"")
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    >>> hex_of("sha256:" + "0" * 64) == "0" * 64
    True
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from pipeline.errors import InvalidNameError

ALGORITHM = "sha256"
DIGEST_PATTERN = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def is_digest(value: str) -> bool:
    return DIGEST_PATTERN.fullmatch(value) is not None


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest, after checking its form (it becomes a path in the store)."""
    if not is_digest(digest):
        raise InvalidNameError(f"digest {digest!r} is not of the form sha256:<64 lowercase hex>")
    return digest.partition(":")[2]


class HashingWriter:
    """Passes bytes to ``sink`` while counting them and hashing them with sha256.

    The layer writer and the store both need the digest of the bytes they stream; wrapping the sink
    once means the bytes are hashed once.
    """

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._sink is not None:
            self._sink.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"
