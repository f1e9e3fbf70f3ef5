"""How a registry front-end behaves, apart from which store it serves.

Example::

    config = RegistryConfig(cache_seconds=2, presign_seconds=600)   # whole-blob GETs 307 to S3
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.digest import hex_of
from pipeline.store.store import BLOBS_PREFIX


@dataclass(frozen=True)
class RegistryConfig:
    # How long a tag lookup or listing is reused before the store is asked again (0: never cached).
    cache_seconds: float = 5.0
    # Whole-blob GETs answer 307 to <public_blob_url>/blobs/sha256/<hex> (a public bucket or CDN in
    # front of the store). Ranged GETs are always served here: S3 answers multi-range with everything.
    public_blob_url: str | None = None
    # Whole-blob GETs answer 307 to a presigned store URL valid this long (S3 only; 0: off).
    presign_seconds: int = 0
    # Memory for checked chunks of virtual blobs (a ModelPack's raw layers), most recently used kept.
    virtual_cache_bytes: int = 256 * 1024 * 1024

    def public_url_of(self, digest: str) -> str | None:
        if self.public_blob_url is None:
            return None
        return f"{self.public_blob_url.rstrip('/')}/{BLOBS_PREFIX}{hex_of(digest)}"
