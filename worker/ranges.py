"""HTTP Range requests (RFC 9110 §14), as pure functions of header values and the blob's size.

Lazy pulling lives on ranges: the stargz snapshotter reads a footer, a TOC and single files with
``Range: bytes=a-b`` and asks for several at once (``bytes=a-b,c-d``), which must get a
``multipart/byteranges`` answer, never the whole blob. A malformed header is refused rather than
ignored for the same reason: ignoring it would send gigabytes to a client that wanted a few bytes.

Example::

    >>> parse_range("bytes=0-99,-10", 1000)
    [ByteRange(start=0, end=100), ByteRange(start=990, end=1000)]
    >>> ByteRange(0, 100).content_range(1000)
    'bytes 0-99/1000'
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

MAX_HEADER_LENGTH = 4096  # a Range header longer than this is an attack, not a lazy reader
MAX_RANGES = 100  # more parts than any lazy reader asks for at once
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits only: \d also takes other scripts' digits
_DIGITS_LIMIT = 19  # positions beyond 10**19 bytes are nonsense and would only slow int()


class MalformedRange(ValueError):
    """The Range header does not follow the grammar (or asks for too much); answered with 400."""


class UnsatisfiableRange(ValueError):
    """No requested range overlaps the blob; answered with 416 and ``Content-Range: bytes */size``."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to ``end`` (exclusive) of a blob."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str, size: int) -> list[ByteRange]:
    """The satisfiable ranges of a ``Range`` header for a blob of ``size`` bytes, in request order.

    Overlapping ranges are merged (sorted), so an answer is never larger than the blob. Raises
    :class:`MalformedRange` or :class:`UnsatisfiableRange`.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedRange(f"Range header longer than {MAX_HEADER_LENGTH} characters")
    unit, equals, specs = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        raise MalformedRange("only 'bytes=' ranges are supported")
    parts = [part.strip() for part in specs.split(",")]
    if len(parts) > MAX_RANGES:
        raise MalformedRange(f"more than {MAX_RANGES} ranges in one request")
    ranges = []
    for part in parts:
        byte_range = _parse_spec(part, size)
        if byte_range is not None:
            ranges.append(byte_range)
    if not ranges:
        raise UnsatisfiableRange(f"no range in {header!r} overlaps the {size} bytes of the blob")
    return _merge_overlaps(ranges)


def _parse_spec(spec: str, size: int) -> ByteRange | None:
    """One ``first-last``, ``first-`` or ``-suffix``; None when it lies outside the blob."""
    match = _SPEC.fullmatch(spec)
    if match is None or match.group(1) == match.group(2) == "":
        raise MalformedRange(f"{spec!r} is not a byte range (first-last, first- or -suffix)")
    first, last = match.groups()
    if len(first) > _DIGITS_LIMIT or len(last) > _DIGITS_LIMIT:
        raise MalformedRange(f"{spec!r} has absurdly large positions")
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    if last != "" and int(last) < start:
        raise MalformedRange(f"{spec!r} ends before it starts")
    if start >= size:
        return None
    end = size if last == "" else min(int(last) + 1, size)
    return ByteRange(start, end)


def _merge_overlaps(ranges: list[ByteRange]) -> list[ByteRange]:
    """Ranges as asked, unless some overlap: then sorted and merged (RFC 9110 allows coalescing)."""
    ordered = sorted(ranges, key=lambda r: r.start)
    if all(a.end <= b.start for a, b in itertools.pairwise(ordered)):
        return ranges
    merged = [ordered[0]]
    for byte_range in ordered[1:]:
        last = merged[-1]
        if byte_range.start < last.end:
            merged[-1] = ByteRange(last.start, max(last.end, byte_range.end))
        else:
            merged.append(byte_range)
    return merged


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (or is ``*``); weak tags compare weakly."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a range may be served under ``If-Range``: absent, or the very (strong) ETag.

    A date never matches: blobs carry no Last-Modified, only their digest as a strong ETag.
    """
    return header is None or header.strip() == etag


@dataclass(frozen=True)
class Multipart:
    """The framing of a ``multipart/byteranges`` body: part headers around the blob's bytes."""

    ranges: list[ByteRange]
    size: int
    boundary: str
    part_type: str

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    def part_header(self, byte_range: ByteRange) -> bytes:
        return (
            f"\r\n--{self.boundary}\r\n"
            f"Content-Type: {self.part_type}\r\n"
            f"Content-Range: {byte_range.content_range(self.size)}\r\n\r\n"
        ).encode("ascii")

    @property
    def closing(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def content_length(self) -> int:
        return sum(len(self.part_header(r)) + r.length for r in self.ranges) + len(self.closing)
