"""Reading an eStargz layer's table of contents: where each file's chunks are, and their digests.

The footer (the blob's last 51 bytes) gives the offset of the TOC member; the TOC lists every file
with its sha256 and, per chunk, the compressed offset of the gzip member the chunk starts and the
chunk's own digest. Chunks are independent gzip members, so any range of any file can be read by
decompressing just the members it touches. Nothing here assumes more of the writer than that
(DESIGN §4): the compressor, its level and any extra members between chunks do not matter.

A TOC is trusted only once its bytes match the ``containerd.io/snapshot/stargz/toc.digest`` the
layer's descriptor carries; every chunk is then checked against its ``chunkDigest`` as it is read.

Example::

    toc = read_toc(lambda start, end: store.read_blob_range(layer.digest, start, end), layer.size,
                   layer.annotations[TOC_DIGEST_ANNOTATION])
    config = toc.files["config.json"]
    print(config.size, config.digest, len(config.chunks))
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib

from pipeline.digest import is_digest, sha256_digest
from pipeline.errors import IntegrityError
from pipeline.oci.estargz import FOOTER_SIZE
from pipeline.oci.tarball import TOC_NAME

RangeReader = Callable[[int, int], Iterator[bytes]]  # bytes start:end of one blob, as pieces
MAX_TOC_SIZE = 256 * 1024 * 1024  # a TOC lists entries of ~200 bytes; this is millions of chunks
_GZIP_WBITS = 31  # zlib: a gzip member (header and trailer checked)
_FOOTER_MAGIC = b"STARGZ"
GzipError: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # the stub types it as an instance


@dataclass(frozen=True)
class TocChunk:
    """One chunk of a file: where its bytes sit in the file and in the blob."""

    file_offset: int  # where the chunk starts in the file
    size: int
    member_offset: int  # compressed offset of the gzip member holding the chunk
    member_end: int  # where the next member the TOC knows of starts (bounds the read)
    inner_offset: int  # where the chunk starts in the member's uncompressed bytes (0 for our writer)
    digest: str  # sha256 of the chunk's uncompressed bytes

    @property
    def file_end(self) -> int:
        return self.file_offset + self.size


@dataclass(frozen=True)
class TocFile:
    """A regular file of the layer: its digest and its chunks, contiguous and in order."""

    path: str
    size: int
    digest: str
    chunks: tuple[TocChunk, ...]

    def chunks_between(self, start: int, end: int) -> list[TocChunk]:
        """The chunks that bytes ``start:end`` of the file touch."""
        return [chunk for chunk in self.chunks if chunk.file_offset < end and chunk.file_end > start]


@dataclass(frozen=True)
class Toc:
    digest: str  # sha256 of the TOC JSON
    files: dict[str, TocFile]  # by path, as in the layer ("config.json", "1_Pooling/config.json")


def read_toc(read: RangeReader, blob_size: int, toc_digest: str, *, label: str = "layer") -> Toc:
    """Read, check against ``toc_digest`` and parse the TOC of the eStargz blob ``read`` reads.

    Raises :class:`IntegrityError` when the footer, the TOC member or the TOC itself is not what an
    eStargz blob with that TOC digest holds.
    """
    if blob_size < FOOTER_SIZE:
        raise IntegrityError(f"{label}: {blob_size} bytes is too short for an eStargz blob")
    toc_offset = footer_toc_offset(_read(read, blob_size - FOOTER_SIZE, blob_size), label)
    if not 0 <= toc_offset < blob_size - FOOTER_SIZE or blob_size - FOOTER_SIZE - toc_offset > MAX_TOC_SIZE:
        raise IntegrityError(f"{label}: the footer points the TOC at {toc_offset}, outside the blob")
    member = _read(read, toc_offset, blob_size - FOOTER_SIZE)
    toc_json = _toc_json(decompress_member(member, f"{label} TOC member"), label)
    digest = sha256_digest(toc_json)
    if digest != toc_digest:
        raise IntegrityError(f"{label}: its TOC has digest {digest}, but the descriptor says {toc_digest}")
    return Toc(digest, parse_toc(json.loads(toc_json), toc_offset, label))


def footer_toc_offset(footer: bytes, label: str = "layer") -> int:
    """The TOC member's offset from the 51-byte footer: an empty gzip member with an ``SG`` extra field."""
    valid = (
        len(footer) == FOOTER_SIZE
        and footer[:4] == b"\x1f\x8b\x08\x04"
        and footer[10:16] == b"\x1a\x00SG\x16\x00"
        and footer[32:38] == _FOOTER_MAGIC
    )
    try:
        offset = int(footer[16:32], 16) if valid else -1
    except ValueError:
        offset = -1
    if offset < 0:
        raise IntegrityError(f"{label}: no eStargz footer at its end")
    return offset


def parse_toc(toc: Any, toc_offset: int, label: str = "layer") -> dict[str, TocFile]:
    """The regular files of a TOC document, their chunks checked for coverage and bounds."""
    entries = toc.get("entries") if isinstance(toc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise IntegrityError(f"{label}: its TOC has no list of entries")
    # A chunk's member ends where the next member the TOC knows of starts, or at the TOC.
    starts = sorted({int(e.get("offset", 0)) for e in entries if e.get("offset")} | {toc_offset})
    next_start = dict(itertools.pairwise(starts))
    files: dict[str, TocFile] = {}
    pending: list[dict[str, Any]] = []

    def finish() -> None:
        if pending:
            file = _toc_file(pending, next_start, toc_offset, label)
            files[file.path] = file
            pending.clear()

    for entry in entries:
        kind = entry.get("type")
        if kind == "chunk":
            if not pending or entry.get("name") != pending[0].get("name"):
                raise IntegrityError(f"{label}: TOC chunk of {entry.get('name')!r} does not follow its file")
            pending.append(entry)
            continue
        finish()
        if kind == "reg":
            pending.append(entry)
    finish()
    return files


def decompress_member(data: bytes, label: str) -> bytes:
    """The uncompressed bytes of the one gzip member at the start of ``data`` (its CRC checked)."""
    decompressor = isal_zlib.decompressobj(_GZIP_WBITS)
    try:
        out = decompressor.decompress(data)
    except GzipError as error:
        raise IntegrityError(f"{label}: not a valid gzip member ({error})") from error
    if not decompressor.eof:
        raise IntegrityError(f"{label}: the gzip member is cut short")
    return out


def _toc_file(entries: list[dict[str, Any]], next_start: dict[int, int], toc_offset: int, label: str) -> TocFile:
    head = entries[0]
    path, size, digest = head.get("name"), head.get("size", 0), head.get("digest", "")
    if not isinstance(path, str) or not isinstance(size, int) or size < 0 or not is_digest(str(digest)):
        raise IntegrityError(f"{label}: TOC entry {path!r} lacks a name, size or sha256 digest")
    chunks: list[TocChunk] = []
    position = 0
    for index, entry in enumerate(entries if size else []):
        offset, member = int(entry.get("chunkOffset", 0)), int(entry.get("offset", 0))
        chunk_size = int(entry.get("chunkSize", 0)) or size - offset  # the last chunk's size is implicit
        chunk_digest = entry.get("chunkDigest", "")
        last = index == len(entries) - 1
        if offset != position or chunk_size <= 0 or (position + chunk_size == size) != last:
            raise IntegrityError(f"{label}: the TOC chunks of {path!r} do not cover it exactly")
        if not 0 < member < toc_offset or not is_digest(str(chunk_digest)):
            raise IntegrityError(f"{label}: TOC chunk {index} of {path!r} lacks an offset or chunkDigest")
        chunks.append(
            TocChunk(offset, chunk_size, member, next_start[member], int(entry.get("innerOffset", 0)), chunk_digest)
        )
        position += chunk_size
    if position != size:
        raise IntegrityError(f"{label}: the TOC chunks of {path!r} do not cover it exactly")
    return TocFile(path, size, str(digest), tuple(chunks))


def _toc_json(member: bytes, label: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(member), mode="r:") as archive:
            entry = archive.next()
            handle = archive.extractfile(entry) if entry is not None and entry.name == TOC_NAME else None
            if handle is None:
                raise IntegrityError(f"{label}: the TOC member holds no {TOC_NAME}")
            return handle.read()
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: the TOC member is not a tar entry ({error})") from error


def _read(read: RangeReader, start: int, end: int) -> bytes:
    return b"".join(read(start, end))
