"""Where images live: the store layout (:mod:`.store`) over a backend (:mod:`.local`, :mod:`.s3`).

Example::

    from pipeline.store import open_store
    store = open_store("store")                 # a local directory, the embedded default
    store = open_store("s3://models/prod")      # a bucket and prefix (AWS S3, R2, MinIO)
"""

from __future__ import annotations

from pipeline.errors import MissingStoreError, StoreError
from pipeline.store.backend import Backend, ObjectInfo, Upload
from pipeline.store.local import LocalBackend
from pipeline.store.store import BlobWriter, Store, blob_key, catalog_key, tag_key

DEFAULT_STORE = "store"
STORE_HELP = f"store: a directory or s3://bucket/prefix (default: ./{DEFAULT_STORE})"

__all__ = [
    "DEFAULT_STORE",
    "STORE_HELP",
    "Backend",
    "BlobWriter",
    "LocalBackend",
    "ObjectInfo",
    "Store",
    "Upload",
    "blob_key",
    "catalog_key",
    "open_store",
    "tag_key",
]


def open_store(location: str, *, existing: bool = False) -> Store:
    """Open a store by location: ``s3://bucket[/prefix]`` or a local directory path.

    With ``existing``, a store that was never written is a :class:`MissingStoreError`: what commands
    that only read a store want, so a mistyped ``--store`` is an error rather than an empty store.
    """
    if not location.strip():
        raise StoreError("the store location is empty: give a directory or s3://bucket[/prefix]")  # not the cwd
    if location.startswith("s3://"):
        from pipeline.store.s3 import S3Backend  # boto3 is imported only when S3 is used

        store = Store(S3Backend.from_url(location))
    else:
        store = Store(LocalBackend(location))
    if existing and not store.backend.exists():
        raise MissingStoreError(
            f"no store at {store.backend.url()}: check --store (a store is what `modelyard build` writes)"
        )
    return store
