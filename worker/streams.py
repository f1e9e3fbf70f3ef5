"""Response bodies streamed from the store in bounded pieces: constant memory whatever the blob's size.

The store's readers are synchronous iterators (a file, an S3 body), so each piece is read in a worker
thread. The first piece is read before the answer starts: a blob that vanished or a store that is
down then still gets a proper 404 or 503 instead of a broken 200.

Example::

    body = await open_stream(content.read_blob(digest, 0, size), size)
    return StreamingResponse(body, headers=headers)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from worker.content import in_thread
from worker.ranges import Multipart

ReadRange = Callable[[int, int], Iterator[bytes]]  # bytes start:end of one blob, as pieces


async def open_stream(pieces: Iterator[bytes], length: int) -> AsyncIterator[bytes]:
    """Stream ``length`` bytes from ``pieces``, having read the first piece already."""
    first = await _next_piece(pieces) if length else None
    return _stream(pieces, first, length)


async def open_multipart(parts: Multipart, reader: ReadRange) -> AsyncIterator[bytes]:
    """Stream a ``multipart/byteranges`` body, the first range's first piece read already."""
    first_range = parts.ranges[0]
    first = await open_stream(reader(first_range.start, first_range.end), first_range.length)
    return _multipart(parts, reader, first)


async def _multipart(parts: Multipart, reader: ReadRange, first: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for index, byte_range in enumerate(parts.ranges):
        yield parts.part_header(byte_range)
        body = first if index == 0 else await open_stream(reader(byte_range.start, byte_range.end), byte_range.length)
        async for piece in body:
            yield piece
    yield parts.closing


async def _stream(pieces: Iterator[bytes], first: bytes | None, length: int) -> AsyncIterator[bytes]:
    remaining = length
    try:
        piece = first
        while piece is not None and remaining > 0:
            remaining -= len(piece)
            yield piece
            # Stop once all bytes are out: asking for one more piece would cost a thread hop.
            piece = await _next_piece(pieces) if remaining > 0 else None
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # closes the file or the S3 body at once, even when the client left early


async def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return await in_thread(lambda: next(pieces, None))
