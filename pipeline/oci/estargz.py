"""The eStargz layer writer: a reproducible tar, cut into gzip members, with a table of contents.

The blob is what DESIGN §4 specifies, byte for byte the same whatever the thread count:

    member 0            tar headers before the first file content (directories, the first file's header)
    member 1..n         one per 4 MiB chunk of file content: the chunk, then whatever tar bytes follow it
                        up to the next chunk (padding, later headers; after the last chunk the tar
                        end-of-archive marker, so plain extractors stop there, then the landmark's header)
    landmark member     the one byte of ``.no.prefetch.landmark`` and its padding
    TOC member          the ``stargz.index.json`` tar entry alone
    footer              a 51-byte empty gzip member whose extra field holds the TOC member's offset

The landmark tells stargz snapshotters not to prefetch: a client that asks for a prefetch (ctr-remote
asks for 10 MiB) would otherwise fetch the first files of the layer whole, and in a model repository
that is often the weights. Like the TOC it comes after the end-of-archive marker, so GNU tar, Python's
tarfile, containerd's applier and ``COPY --from`` never create it; the snapshotter finds it in the TOC
(and hides it from the mount). It is what the reference writer writes, with the same one byte.

Every member is an independent raw-deflate stream with a fixed gzip header, which is what lets
chunks compress in parallel without the output depending on the number of threads. How a member is
deflated (libdeflate, or stored blocks when it would barely shrink) is :func:`deflate_member`, by the
rule that ``pipeline/oci/format.py`` names.

Example::

    files = [LayerFile("config.json", 612, lambda: open("model/config.json", "rb"))]
    with open("layer.tar.gz", "wb") as sink:
        layer = write_layer(files, sink)
    print(layer.digest, layer.diff_id, layer.toc_digest)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import deflate

from pipeline.digest import ALGORITHM, HashingWriter, sha256_digest
from pipeline.errors import SourceChangedError
from pipeline.oci import tarball
from pipeline.oci.format import (
    CHUNK_SIZE,
    COMPRESSION_LEVEL,
    SAMPLE_WINDOW,
    SAMPLE_WINDOWS,
    STORE_BELOW_SAVING_PERCENT,
    check_compressor,
)

TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"
FOOTER_SIZE = 51

# RFC 1952 header: deflate, no flags, mtime 0, no extra flags, OS "unknown" (as Go writes it).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_EMPTY_STORED_BLOCK = b"\x01\x00\x00\xff\xff"


@dataclass(frozen=True)
class LayerFile:
    """A regular file to put in the layer: its path in the image, its size, and how to read its bytes."""

    path: str
    size: int
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class FileRecord:
    """What the catalog needs of each file: path, size and sha256 digest of its content."""

    path: str
    size: int
    digest: str


@dataclass(frozen=True)
class LayerResult:
    """Everything the image and the catalog need to know about a written layer."""

    digest: str  # sha256 of the compressed blob
    size: int  # compressed size
    diff_id: str  # sha256 of the whole uncompressed stream, TOC included
    toc_digest: str  # sha256 of the TOC JSON
    uncompressed_size: int
    files: tuple[FileRecord, ...]

    @property
    def annotations(self) -> dict[str, str]:
        """The layer descriptor annotations without which the stargz snapshotter will not lazy-pull."""
        return {
            TOC_DIGEST_ANNOTATION: self.toc_digest,
            UNCOMPRESSED_SIZE_ANNOTATION: str(self.uncompressed_size),
        }


@dataclass
class TocEntry:
    """One entry of ``stargz.index.json``. Zero values are omitted when serialized, as the reference does."""

    name: str
    type: str
    size: int = 0
    modtime: str = ""
    mode: int = 0
    offset: int = 0
    digest: str = ""
    chunkOffset: int = 0
    chunkSize: int = 0
    chunkDigest: str = ""

    def to_json(self) -> dict[str, Any]:
        # Field order follows the reference implementation's struct, for readers comparing by eye.
        return {key: value for key, value in vars(self).items() if value or key in ("name", "type")}


@dataclass(frozen=True)
class Chunk:
    """A slice of one file's content; it starts its own gzip member."""

    file: LayerFile
    offset: int
    size: int
    toc_entry: TocEntry  # the entry of this chunk: the file's "reg" entry for the first, "chunk" after
    file_entry: TocEntry  # the file's "reg" entry, which gets the whole file's digest

    @property
    def is_last(self) -> bool:
        return self.offset + self.size == self.file.size


@dataclass(frozen=True)
class Member:
    """One gzip member: an optional chunk of file content, then tar bytes that follow it."""

    chunk: Chunk | None
    tail: bytes


@dataclass
class LayerPlan:
    """The structure of a layer, computed from the file list alone (no I/O).

    ``members()`` yields the gzip members in order; while it runs it fills ``toc`` with the TOC entries,
    whose offsets and digests the writer completes.
    """

    files: Sequence[LayerFile]
    mtime: int = 0
    chunk_size: int = CHUNK_SIZE
    toc: list[TocEntry] = field(default_factory=list)

    def members(self) -> Iterator[Member]:
        by_path = {f.path: f for f in self.files}
        entries = tarball.plan_entries((f.path, f.size) for f in self.files)
        modtime = _rfc3339(self.mtime)
        pending = bytearray()
        previous: Chunk | None = None
        self.toc.clear()
        for entry in entries:
            pending += tarball.header(entry, self.mtime)
            toc_entry = TocEntry(name=entry.name, type=entry.kind, size=entry.size, modtime=modtime, mode=entry.mode)
            if entry.kind == "dir" or entry.size == 0:
                if entry.kind == "reg":
                    toc_entry.digest = _EMPTY_DIGEST
                self.toc.append(toc_entry)
                continue
            file = by_path[entry.name]
            file_entry = toc_entry
            for offset in range(0, entry.size, self.chunk_size):
                yield Member(previous, bytes(pending))
                pending.clear()
                if offset:
                    toc_entry = TocEntry(name=entry.name, type="chunk")
                toc_entry.chunkOffset = offset
                size = min(self.chunk_size, entry.size - offset)
                if offset + size < entry.size:
                    toc_entry.chunkSize = size
                self.toc.append(toc_entry)
                previous = Chunk(file, offset, size, toc_entry, file_entry)
            pending += tarball.padding(entry.size)
        pending += tarball.END_OF_ARCHIVE
        # After the end of the archive, where only eStargz readers look: the landmark (see the module doc).
        pending += tarball.regular_file_header(tarball.NO_PREFETCH_LANDMARK, len(_LANDMARK_CONTENT), self.mtime)
        yield Member(previous, bytes(pending))
        landmark = TocEntry(
            name=tarball.NO_PREFETCH_LANDMARK,
            type="reg",
            size=len(_LANDMARK_CONTENT),
            modtime=modtime,
            mode=tarball.FILE_MODE,
        )
        self.toc.append(landmark)
        chunk = Chunk(_LANDMARK_FILE, 0, len(_LANDMARK_CONTENT), landmark, landmark)
        yield Member(chunk, tarball.padding(len(_LANDMARK_CONTENT)))


def write_layer(
    files: Sequence[LayerFile],
    sink: BinaryIO | HashingWriter,
    *,
    mtime: int = 0,
    threads: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    on_progress: Callable[[int], None] | None = None,
    on_file: Callable[[FileRecord], None] | None = None,
) -> LayerResult:
    """Stream the eStargz layer of ``files`` into ``sink`` and describe what was written.

    ``sink`` receives exactly the blob, from its first byte. Memory stays bounded by a few chunks per
    thread whatever the files' sizes. ``on_progress`` is called
    with the number of content bytes each time a chunk has been read. ``on_file`` gets each non-empty
    file's record as soon as its last byte is digested, so a check of its digest can stop the layer at
    that file rather than at the end (an exception it raises comes out of ``write_layer``). A file whose
    size differs from the listed one raises :class:`SourceChangedError`; the sink then holds a partial
    blob the caller discards.

    The work is a pipeline, so that the sequential hashes do not hold up the reader: this thread reads
    chunks; ``threads`` workers compress members and digest chunks; one thread digests files and the
    uncompressed stream in order; one thread writes members in order (and digests the blob).
    """
    check_compressor()
    out = sink if isinstance(sink, HashingWriter) else HashingWriter(sink)
    if out.size:
        raise ValueError("write_layer writes a whole blob: the sink must be empty")
    plan = LayerPlan(files, mtime, chunk_size)
    stream = _StreamDigest(on_file)
    reader = _ChunkReader()
    workers = threads or os.cpu_count() or 1
    pending: deque[Future[None]] = deque()

    def write_member(member: Member, compressed: Future[tuple[MemberPieces, str]]) -> None:
        pieces, chunk_digest = compressed.result()
        if member.chunk is not None:
            member.chunk.toc_entry.offset = out.size
            member.chunk.toc_entry.chunkDigest = chunk_digest
        for piece in pieces:
            out.write(piece)

    with (
        ThreadPoolExecutor(workers, thread_name_prefix="estargz-compress") as compress_pool,
        ThreadPoolExecutor(1, thread_name_prefix="estargz-digest") as digest_pool,
        ThreadPoolExecutor(1, thread_name_prefix="estargz-write") as write_pool,
    ):
        try:
            for member in plan.members():
                data = reader.read(member.chunk) if member.chunk is not None else b""
                compressed = compress_pool.submit(_compress_member, data, member.tail)
                pending.append(digest_pool.submit(stream.update, member, data, reader.file_hash))
                pending.append(write_pool.submit(write_member, member, compressed))
                while len(pending) > 2 * (workers + 1):
                    pending.popleft().result()
                if on_progress is not None and data and member.chunk.file is not _LANDMARK_FILE:  # type: ignore[union-attr]
                    on_progress(len(data))
            while pending:
                pending.popleft().result()
        finally:
            reader.close()
            for future in pending:
                future.cancel()

    toc_json = json.dumps(
        {"version": 1, "entries": [entry.to_json() for entry in plan.toc]}, separators=(",", ":")
    ).encode("ascii")
    toc_tar = (
        tarball.regular_file_header(tarball.TOC_NAME, len(toc_json), mtime)
        + toc_json
        + tarball.padding(len(toc_json))
        + tarball.END_OF_ARCHIVE
    )
    stream.diff.update(toc_tar)
    stream.size += len(toc_tar)
    toc_offset = out.size
    for piece in _compress_member(toc_tar, b"")[0]:
        out.write(piece)
    out.write(footer(toc_offset))

    return LayerResult(
        digest=out.digest,
        size=out.size,
        diff_id=f"{ALGORITHM}:{stream.diff.hexdigest()}",
        toc_digest=sha256_digest(toc_json),
        uncompressed_size=stream.size,
        files=tuple(
            FileRecord(e.name, e.size, e.digest)
            for e in plan.toc
            if e.type == "reg" and e.name != tarball.NO_PREFETCH_LANDMARK  # no model file has that name
        ),
    )


def footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer: an empty gzip member whose extra field points at the TOC member."""
    subfield = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(subfield)) + subfield
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra)) + extra
    return header + _EMPTY_STORED_BLOCK + struct.pack("<II", 0, 0)


_EMPTY_DIGEST = sha256_digest(b"")
# The landmark's content is what the reference writer puts there; readers only look at its name.
_LANDMARK_CONTENT = b"\x0f"
_LANDMARK_FILE = LayerFile(tarball.NO_PREFETCH_LANDMARK, len(_LANDMARK_CONTENT), lambda: io.BytesIO(_LANDMARK_CONTENT))


MemberPieces = tuple[bytes, bytes | bytearray, bytes]


def _compress_member(data: bytes, tail: bytes) -> tuple[MemberPieces, str]:
    """Compress one member and digest its chunk. Runs on a worker thread (both release the GIL).

    The member comes back as (header, deflate body, trailer): joining them would copy megabytes
    while holding the GIL, for nothing.
    """
    chunk_digest = sha256_digest(data) if data else ""
    content = data + tail if tail else data
    body = deflate_member(content)
    trailer = struct.pack("<II", deflate.crc32(content), len(content) & 0xFFFFFFFF)
    return (_GZIP_HEADER, body, trailer), chunk_digest


def deflate_member(content: bytes) -> bytes | bytearray:
    """The raw deflate stream of one member, by the format's rule (``pipeline/oci/format.py``).

    libdeflate at ``COMPRESSION_LEVEL``, unless a sample of ``content`` compresses by less than
    ``STORE_BELOW_SAVING_PERCENT``: then stored blocks, which cost neither side any work. Example::

        deflate_member(b'{"hidden_size": 384}' * 100)   # compressed
        deflate_member(os.urandom(4 << 20))              # stored blocks
    """
    sample = _sample(content)
    compressed = deflate.deflate_compress(sample, COMPRESSION_LEVEL)
    if 100 * len(compressed) > (100 - STORE_BELOW_SAVING_PERCENT) * len(sample):
        return deflate.deflate_compress(content, 0)  # level 0: stored blocks only
    if len(sample) == len(content):
        return compressed
    return deflate.deflate_compress(content, COMPRESSION_LEVEL)


def _sample(content: bytes) -> bytes:
    """What the store rule compresses: evenly spread windows of ``content``, or all of it if it is small."""
    if len(content) <= SAMPLE_WINDOWS * SAMPLE_WINDOW:
        return content
    step = (len(content) - SAMPLE_WINDOW) // (SAMPLE_WINDOWS - 1)
    view = memoryview(content)
    return b"".join(view[i * step : i * step + SAMPLE_WINDOW] for i in range(SAMPLE_WINDOWS))


def _rfc3339(epoch: int) -> str:
    # The reference writer omits the epoch itself; other times are whole seconds in UTC.
    if epoch == 0:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _StreamDigest:
    """Digests, in stream order, the uncompressed layer (its DiffID) and each whole file."""

    def __init__(self, on_file: Callable[[FileRecord], None] | None = None) -> None:
        self.diff = hashlib.sha256()
        self.size = 0
        self._on_file = on_file

    def update(self, member: Member, data: bytes, file_hash: Any) -> None:
        self.diff.update(data)
        self.diff.update(member.tail)
        self.size += len(data) + len(member.tail)
        chunk = member.chunk
        if chunk is not None:
            file_hash.update(data)
            if chunk.is_last:
                entry = chunk.file_entry
                entry.digest = f"{ALGORITHM}:{file_hash.hexdigest()}"
                if self._on_file is not None and chunk.file is not _LANDMARK_FILE:
                    self._on_file(FileRecord(entry.name, entry.size, entry.digest))


class _ChunkReader:
    """Reads chunks of files in order and checks that each file has exactly the listed size."""

    def __init__(self) -> None:
        self._handle: BinaryIO | None = None
        self.file_hash = hashlib.sha256()  # of the file being read; updated by _StreamDigest, in order

    def read(self, chunk: Chunk) -> bytes:
        if chunk.offset == 0:
            self.close()
            self._handle = chunk.file.open()
            self.file_hash = hashlib.sha256()
        assert self._handle is not None
        data = self._handle.read(chunk.size)
        while len(data) < chunk.size:
            more = self._handle.read(chunk.size - len(data))
            if not more:
                raise SourceChangedError(
                    f"{chunk.file.path}: file ended at {chunk.offset + len(data)} bytes, "
                    f"but {chunk.file.size} were listed (did it change while being read?)"
                )
            data += more
        if chunk.is_last:
            if self._handle.read(1):
                raise SourceChangedError(
                    f"{chunk.file.path}: file is longer than the {chunk.file.size} bytes listed "
                    "(did it change while being read?)"
                )
            self.close()
        return data

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
