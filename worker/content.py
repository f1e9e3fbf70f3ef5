"""The store as the registry reads it: async, cached, and never blocking the event loop.

Store calls are synchronous (files, boto3), so each runs in a worker thread. Tag lookups and
listings, and blob sizes, are cached for ``cache_seconds`` (a tag moved by a publish shows within
that time); manifests, being content-addressed and small, are cached longer. Hot manifest GETs are
then answered without leaving the event loop.

Example::

    content = Content(open_store("store"), cache_seconds=5)
    descriptor = await content.resolve_tag("org/model", "latest")
    manifest = await content.manifest(descriptor.digest)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread

from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.image import MANIFEST_MEDIA_TYPES, Descriptor
from pipeline.store import Store
from pipeline.store.store import SITE_PREFIX
from worker.cache import MISSING, ExpiringCache
from worker.errors import RegistryError

K = TypeVar("K")
T = TypeVar("T")

# Content-addressed entries change only by deletion (garbage collection), so they may stay longer.
CONTENT_CACHE_SECONDS = 300.0
MAX_CACHE_ENTRIES = 10_000
MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # what distribution accepts; anything larger is no manifest
MAX_CACHED_MANIFEST_SIZE = 64 * 1024  # keeps the manifest cache under MAX_CACHE_ENTRIES x 64 KiB
DOCKER_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class StoredManifest:
    """A manifest or index exactly as stored, and the media type it declares."""

    digest: str
    media_type: str
    data: bytes


class Content:
    """Async, cached reads of the store for the registry endpoints."""

    def __init__(self, store: Store, cache_seconds: float) -> None:
        self.store = store
        self._tags: ExpiringCache[tuple[str, str], Descriptor | None] = ExpiringCache(cache_seconds, MAX_CACHE_ENTRIES)
        self._tag_lists: ExpiringCache[str, list[str]] = ExpiringCache(cache_seconds, MAX_CACHE_ENTRIES)
        self._repositories: ExpiringCache[None, list[str]] = ExpiringCache(cache_seconds, 1)
        self._manifests: ExpiringCache[str, StoredManifest | None] = ExpiringCache(
            CONTENT_CACHE_SECONDS, MAX_CACHE_ENTRIES
        )
        self._sizes: ExpiringCache[str, int | None] = ExpiringCache(cache_seconds, MAX_CACHE_ENTRIES)

    async def resolve_tag(self, name: str, tag: str) -> Descriptor | None:
        return await _cached(self._tags, (name, tag), lambda: self.store.get_tag(name, tag))

    async def tags(self, name: str) -> list[str]:
        """The repository's tags, sorted; empty when the repository does not exist."""
        return await _cached(self._tag_lists, name, lambda: self.store.tags(name))

    async def repository_exists(self, name: str) -> bool:
        return bool(await self.tags(name))

    async def repositories(self) -> list[str]:
        return await _cached(self._repositories, None, self.store.repositories)

    async def manifest(self, digest: str) -> StoredManifest | None:
        """The manifest or index stored under ``digest``; None when absent or not a manifest."""
        cached = self._manifests.get(digest)
        if cached is not MISSING:
            return cached
        manifest = await in_thread(lambda: self._read_manifest(digest))
        if manifest is None or len(manifest.data) <= MAX_CACHED_MANIFEST_SIZE:
            self._manifests.put(digest, manifest)
        return manifest

    def _read_manifest(self, digest: str) -> StoredManifest | None:
        size = self.store.blob_size(digest)
        if size is None or size > MAX_MANIFEST_SIZE:
            return None  # absent, or a layer: never read gigabytes to find out it is no manifest
        try:
            data = self.store.read_blob(digest)
        except NotFoundError:
            return None
        except IntegrityError as error:
            raise RegistryError.corrupt(digest) from error
        media_type = _declared_media_type(data)
        return None if media_type is None else StoredManifest(digest, media_type, data)

    async def blob_size(self, digest: str) -> int | None:
        return await _cached(self._sizes, digest, lambda: self.store.blob_size(digest))

    async def site_size(self, key: str) -> int | None:
        """Size of ``site/<key>``, or None when there is no such file."""
        info = await in_thread(lambda: self.store.backend.stat(SITE_PREFIX + key))
        return None if info is None else info.size

    def read_blob(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """A synchronous iterator over bytes ``start:end`` of a blob (drive it with :func:`in_thread`)."""
        return _or_gone(self.store.read_blob_range(digest, start, end), RegistryError.blob_unknown(digest))

    def read_site(self, key: str, size: int) -> Iterator[bytes]:
        return _or_gone(self.store.backend.read_range(SITE_PREFIX + key, 0, size), RegistryError.not_found())


def _or_gone(pieces: Iterator[bytes], gone: RegistryError) -> Iterator[bytes]:
    """``pieces``, but an object deleted since it was looked up is a 404, not a store failure (503)."""
    try:
        yield from pieces
    except NotFoundError as error:
        raise gone from error


async def in_thread(call: Callable[[], T]) -> T:
    """Run a blocking store call in a worker thread."""
    return await anyio.to_thread.run_sync(call)


async def _cached(cache: ExpiringCache[K, T], key: K, load: Callable[[], T]) -> T:
    cached = cache.get(key)
    if cached is not MISSING:
        return cached
    value = await in_thread(load)
    cache.put(key, value)
    return value


def _declared_media_type(data: bytes) -> str | None:
    """The ``mediaType`` a stored manifest declares, if it is JSON and one we serve as a manifest."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    if media_type in MANIFEST_MEDIA_TYPES or media_type in DOCKER_MANIFEST_TYPES:
        return str(media_type)
    return None
