"""Virtual blobs: the raw per-file layers of a ModelPack, cut out of the one stored eStargz layer.

A raw layer's digest is its file's sha256. The bytes are never stored a second time: they are the
file's chunks in the eStargz layer of the manifest's ``subject`` (the image index), decompressed
member by member. Each chunk is checked against the TOC's ``chunkDigest`` before any of its bytes
leave, and the TOC against the layer descriptor's TOC digest, so wrong bytes never go out under a
digest: a corrupted layer raises :class:`IntegrityError` instead.

:class:`Blobs` is how everything that copies blobs (push, OCI layout export) reads them: a stored
blob from the store, a virtual one out of its layer.

Example::

    blobs = Blobs(store)
    descriptors = blobs.learn(reachable(store, store.get_tag("org/model", "latest-modelpack")))
    for descriptor in descriptors:
        data = b"".join(blobs.read_range(descriptor, 0, descriptor.size))
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib

from pipeline.digest import is_digest, sha256_digest
from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.estargz import TOC_DIGEST_ANNOTATION
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST, Descriptor
from pipeline.oci.modelpack import ANNOTATION_FILEPATH, RAW_MEDIA_TYPES
from pipeline.oci.toc import GzipError, RangeReader, Toc, TocChunk, TocFile, read_toc
from pipeline.store import Store

ReadJson = Callable[[str], dict[str, Any]]
PREFETCH = 2  # chunks decompressed ahead of the one being sent (two cores' worth): ~16 MiB per reader
_TAIL_ROOM = 64 * 1024  # the tar bytes a member holds after its chunk: padding, the next headers


@dataclass(frozen=True)
class VirtualBlob:
    """A raw layer whose bytes are the file ``path`` of the eStargz ``layer``."""

    digest: str
    size: int
    path: str
    layer: Descriptor  # with its TOC digest annotation

    @property
    def toc_digest(self) -> str:
        return self.layer.annotations.get(TOC_DIGEST_ANNOTATION, "")


def virtual_layers(document: dict[str, Any], read_json: ReadJson) -> dict[str, VirtualBlob]:
    """The virtual blobs a manifest references: its raw layers, if its subject is an eStargz image.

    ``read_json`` reads a manifest or index by digest (checked against it). Raw layers of a manifest
    with no image as its subject are ordinary blobs and not listed.
    """
    raw = [layer for layer in document.get("layers") or [] if layer.get("mediaType") in RAW_MEDIA_TYPES]
    subject = document.get("subject")
    if not raw or not isinstance(subject, dict) or subject.get("mediaType") != MEDIA_TYPE_INDEX:
        return {}
    layer = backing_layer(read_json, str(subject.get("digest")))
    if layer is None:
        return {}
    result = {}
    for entry in raw:
        path = (entry.get("annotations") or {}).get(ANNOTATION_FILEPATH)
        digest, size = entry.get("digest"), entry.get("size")
        if isinstance(path, str) and isinstance(digest, str) and is_digest(digest) and isinstance(size, int):
            result[digest] = VirtualBlob(digest, size, path, layer)
    return result


def backing_layer(read_json: ReadJson, index_digest: str) -> Descriptor | None:
    """The eStargz layer an image index's manifests share, or None if it is no such image."""
    manifests = read_json(index_digest).get("manifests") or []
    if not manifests or manifests[0].get("mediaType") != MEDIA_TYPE_MANIFEST:
        return None
    layers = read_json(str(manifests[0]["digest"])).get("layers") or []
    if len(layers) != 1 or layers[0].get("mediaType") != MEDIA_TYPE_LAYER:
        return None
    layer = Descriptor.from_json(layers[0])
    return layer if TOC_DIGEST_ANNOTATION in layer.annotations else None


def file_of(toc: Toc, blob: VirtualBlob) -> TocFile:
    """The TOC's file for ``blob``, which must have exactly the blob's digest and size."""
    file = toc.files.get(blob.path)
    if file is None or file.digest != blob.digest or file.size != blob.size:
        raise IntegrityError(
            f"layer {blob.layer.digest}: its TOC has no file {blob.path!r} of {blob.size} bytes "
            f"with digest {blob.digest}"
        )
    return file


def read_file_range(
    load: Callable[[TocChunk], bytes],
    file: TocFile,
    start: int,
    end: int,
    *,
    executor: Executor | None = None,
) -> Generator[bytes, None, None]:
    """Bytes ``start:end`` of ``file``, loading only the chunks that range touches.

    ``load`` returns a chunk's checked bytes (:func:`read_chunk`, or a cache in front of it). With an
    ``executor``, the next chunks load while the current one is consumed. A chunk that fails its
    check raises (:class:`IntegrityError`) before any of its bytes are yielded.
    """
    chunks = file.chunks_between(start, end)

    def cut(chunk: TocChunk, data: bytes) -> bytes:
        if chunk.file_offset >= start and chunk.file_end <= end:
            return data
        return data[max(start - chunk.file_offset, 0) : min(end, chunk.file_end) - chunk.file_offset]

    if executor is None:
        for chunk in chunks:
            yield cut(chunk, load(chunk))
        return
    ahead: deque[tuple[TocChunk, Future[bytes]]] = deque()
    upcoming = iter(chunks)
    try:
        for chunk in upcoming:
            ahead.append((chunk, executor.submit(load, chunk)))
            if len(ahead) > PREFETCH:
                break
        while ahead:
            chunk, loading = ahead.popleft()
            following = next(upcoming, None)
            if following is not None:
                ahead.append((following, executor.submit(load, following)))
            yield cut(chunk, loading.result())
    finally:
        for _, loading in ahead:
            loading.cancel()


def read_chunk(read_layer: RangeReader, chunk: TocChunk, label: str) -> bytes:
    """One chunk's uncompressed bytes, checked against its ``chunkDigest``."""
    member = b"".join(read_layer(chunk.member_offset, chunk.member_end))
    try:
        # One member (zlib stops at its end and checks its CRC), into a buffer sized for the chunk at once:
        # growing it as it fills costs as much as the inflate itself.
        data = isal_zlib.decompress(member, 31, chunk.inner_offset + chunk.size + _TAIL_ROOM)
    except GzipError as error:
        raise IntegrityError(f"{label}: the member at {chunk.member_offset} is not valid gzip ({error})") from error
    if chunk.inner_offset or len(data) != chunk.size:
        data = data[chunk.inner_offset : chunk.inner_offset + chunk.size]
    if len(data) != chunk.size or sha256_digest(data) != chunk.digest:
        raise IntegrityError(
            f"{label}: the chunk at {chunk.file_offset} does not match its chunkDigest {chunk.digest}: "
            "the stored layer is corrupt"
        )
    return data


class ChunkCache:
    """Checked chunks of virtual blobs, the most recently used kept up to ``max_bytes`` (thread-safe).

    A chunk enters only once it matched its digest, so what the cache answers is what the layer holds;
    a popular file is then decompressed once, not once per pull.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._chunks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, layer: str, chunk: TocChunk, read: Callable[[], bytes]) -> bytes:
        """The chunk at ``chunk.member_offset`` of ``layer``, from the cache or from ``read``."""
        key = (layer, chunk.member_offset)
        with self._lock:
            data = self._chunks.get(key)
            if data is not None:
                self._chunks.move_to_end(key)
                return data
        data = read()
        if len(data) <= self.max_bytes:
            with self._lock:
                if key not in self._chunks:
                    self._chunks[key] = data
                    self.size += len(data)
                while self.size > self.max_bytes:
                    _, dropped = self._chunks.popitem(last=False)
                    self.size -= len(dropped)
        return data


class Blobs:
    """Reads the blobs a walk reaches: stored ones from the store, virtual ones out of their layer.

    ``learn`` registers the virtual blobs of the manifests among some descriptors; TOCs are read once
    per layer. Thread-safe.
    """

    def __init__(self, store: Store, executor: Executor | None = None) -> None:
        self.store = store
        self.executor = executor
        self._virtual: dict[str, VirtualBlob] = {}
        self._tocs: dict[str, Toc] = {}
        self._lock = threading.Lock()

    def learn(self, descriptors: Iterable[Descriptor]) -> list[Descriptor]:
        """Register the virtual blobs of every manifest among ``descriptors``; return the descriptors."""
        listed = list(descriptors)
        for descriptor in listed:
            if descriptor.media_type == MEDIA_TYPE_MANIFEST:
                self._virtual.update(
                    virtual_layers(self.store.read_json_blob(descriptor.digest), self.store.read_json_blob)
                )
        return listed

    def virtual(self, digest: str) -> VirtualBlob | None:
        """The virtual blob of ``digest`` if it is one and is not stored as a blob of its own."""
        blob = self._virtual.get(digest)
        return None if blob is None or self.store.has_blob(digest) else blob

    def present(self, descriptor: Descriptor) -> bool:
        """Whether the blob can be read: stored (at its size), or virtual and its layer stored."""
        blob = self.virtual(descriptor.digest)
        stored = blob.layer if blob is not None else descriptor
        return self.store.blob_size(stored.digest) == stored.size

    def read_range(self, descriptor: Descriptor, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start:end`` of the blob; raises NotFoundError when it is absent (or its layer is)."""
        blob = self.virtual(descriptor.digest)
        if blob is None:
            return self.store.read_blob_range(descriptor.digest, start, end)
        file = file_of(self.toc(blob.layer), blob)
        reader, label = self._layer_reader(blob.layer), f"{blob.layer.digest}: {file.path}"
        return read_file_range(lambda chunk: read_chunk(reader, chunk, label), file, start, end, executor=self.executor)

    def toc(self, layer: Descriptor) -> Toc:
        with self._lock:
            toc = self._tocs.get(layer.digest)
        if toc is None:
            if not self.store.has_blob(layer.digest):
                raise NotFoundError(f"layer {layer.digest} is not in the store {self.store.backend.url()}")
            toc = read_toc(
                self._layer_reader(layer),
                layer.size,
                layer.annotations.get(TOC_DIGEST_ANNOTATION, ""),
                label=layer.digest,
            )
            with self._lock:
                self._tocs[layer.digest] = toc
        return toc

    def _layer_reader(self, layer: Descriptor) -> RangeReader:
        return lambda start, end: self.store.read_blob_range(layer.digest, start, end)
