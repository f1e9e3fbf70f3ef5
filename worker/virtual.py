"""Virtual blobs and referrers as the registry serves them, from cached views of the store.

A repository's links (:func:`pipeline.oci.referrers.scan_repository`: which format manifests refer
to which index, which raw layers are virtual) are rebuilt at most every ``cache_seconds``, once
however many requests ask at the same moment. A layer's TOC is read and checked once and kept
(layers are immutable). Reading a virtual blob decompresses only the chunks a range touches, two
chunks ahead of the one being sent, on a pool as large as the machine has cores; checked chunks are
kept in a bounded cache (``--virtual-cache-mib``), so a popular file is decompressed once.

Example::

    virtual = VirtualContent(store, cache_seconds=5)
    blob = await virtual.blob("org/model", digest)
    if blob is not None:
        body = await open_stream(blob.read(0, blob.size), blob.size)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.estargz import TOC_DIGEST_ANNOTATION
from pipeline.oci.image import Descriptor
from pipeline.oci.referrers import RepositoryLinks, scan_repository
from pipeline.oci.toc import Toc, TocChunk, TocFile, read_toc
from pipeline.oci.virtual import ChunkCache, VirtualBlob, file_of, read_chunk, read_file_range
from pipeline.store import Store
from worker.cache import MISSING, ExpiringCache
from worker.content import CONTENT_CACHE_SECONDS, MAX_CACHE_ENTRIES, in_thread
from worker.errors import RegistryError

log = logging.getLogger("modelyard.worker")

K = TypeVar("K")
T = TypeVar("T")

MAX_CACHED_TOCS = 256  # a TOC costs ~100 bytes a chunk in memory: 256 of 10 GiB models is ~64 MB


@dataclass(frozen=True)
class VirtualFile:
    """A virtual blob ready to serve: its size, and a reader of any range of it."""

    digest: str
    size: int
    read: Callable[[int, int], Iterator[bytes]]  # bytes start:end, as pieces (drive it in a thread)


class VirtualContent:
    def __init__(self, store: Store, cache_seconds: float, chunk_cache_bytes: int = 0) -> None:
        self.store = store
        self.chunks = ChunkCache(chunk_cache_bytes)
        self._links: ExpiringCache[str, RepositoryLinks] = ExpiringCache(cache_seconds, MAX_CACHE_ENTRIES)
        self._tocs: ExpiringCache[str, Toc] = ExpiringCache(CONTENT_CACHE_SECONDS, MAX_CACHED_TOCS)
        self._loading: dict[object, asyncio.Future[Any]] = {}
        self._pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="virtual-blob")

    async def links(self, name: str) -> RepositoryLinks:
        return await self._cached(self._links, name, lambda: in_thread(lambda: scan_repository(self.store, name)))

    async def referrers(self, name: str, subject: str, artifact_type: str | None) -> list[Descriptor]:
        return (await self.links(name)).referrers_of(subject, artifact_type)

    async def blob(self, name: str, digest: str) -> VirtualFile | None:
        """The virtual blob ``digest`` of repository ``name``, if a published manifest there references it.

        Its layer's TOC is checked first: a layer gone answers None (404), a damaged one 500.
        """
        blob = (await self.links(name)).virtual.get(digest)
        if blob is None:
            return None
        try:
            toc = await self._cached(self._tocs, blob.layer.digest, lambda: in_thread(lambda: self._read_toc(blob)))
            file = file_of(toc, blob)
        except NotFoundError:
            return None
        except IntegrityError as error:
            log.error("virtual blob %s of %s: %s", digest, name, error)
            raise RegistryError.corrupt(digest) from error
        return VirtualFile(digest, file.size, lambda start, end: self._read(blob, file, start, end))

    def _read_toc(self, blob: VirtualBlob) -> Toc:
        layer = blob.layer
        return read_toc(
            self._layer_reader(layer), layer.size, layer.annotations[TOC_DIGEST_ANNOTATION], label=layer.digest
        )

    def _read(self, blob: VirtualBlob, file: TocFile, start: int, end: int) -> Iterator[bytes]:
        reader, label = self._layer_reader(blob.layer), f"layer {blob.layer.digest}: {file.path}"

        def load(chunk: TocChunk) -> bytes:
            return self.chunks.load(blob.layer.digest, chunk, lambda: read_chunk(reader, chunk, label))

        pieces = read_file_range(load, file, start, end, executor=self._pool)
        try:
            yield from pieces
        except NotFoundError as error:
            raise RegistryError.blob_unknown(blob.digest) from error
        except IntegrityError as error:
            # Nothing of a chunk that fails its digest was sent; the answer stops here, loudly.
            log.error("virtual blob %s: %s", blob.digest, error)
            raise RegistryError.corrupt(blob.digest) from error
        finally:
            pieces.close()

    def _layer_reader(self, layer: Descriptor) -> Callable[[int, int], Iterator[bytes]]:
        return lambda start, end: self.store.read_blob_range(layer.digest, start, end)

    async def _cached(self, cache: ExpiringCache[K, T], key: K, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, else one load however many callers wait for it meanwhile.

        The load runs as a task of its own: a caller that goes away does not cancel it for the others.
        """
        value = cache.get(key)
        if value is not MISSING:
            return value
        token = (id(cache), key)
        task = self._loading.get(token)
        if task is None:

            async def load_and_keep() -> T:
                loaded = await load()
                cache.put(key, loaded)
                return loaded

            task = asyncio.ensure_future(load_and_keep())
            self._loading[token] = task
            task.add_done_callback(lambda done: self._forget(token, done))
        return await asyncio.shield(task)

    def _forget(self, token: object, done: asyncio.Future[object]) -> None:
        self._loading.pop(token, None)
        if not done.cancelled():
            done.exception()  # retrieved: a failure every caller left behind is not reported as lost
