"""Build one image from a file list and publish it to a store, in the order that keeps readers safe.

Publish order (DESIGN §3): the layer blob (streamed straight into the store), then configs, manifests,
the index, then the tags, then the catalog record. Killed at any moment, the store holds nothing
half-written; run again, it converges.

Example::

    built = build_and_publish(store, files_from_dir("model"), name="org/model", tags=["latest"],
                              metadata=ImageMetadata(title="org/model", source="", revision=""))
    print(built.index.digest)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.digest import hex_of
from pipeline.errors import ModelyardError
from pipeline.names import check_name, check_tag
from pipeline.oci import estargz
from pipeline.oci.estargz import LayerFile, LayerResult
from pipeline.oci.format import FORMAT_DESCRIPTION, FORMAT_VERSION
from pipeline.oci.image import DEFAULT_PLATFORMS, Descriptor, Image, ImageMetadata, Platform, build_image
from pipeline.store import Store


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tags: tuple[str, ...]
    index: Descriptor
    image: Image
    layer: LayerResult
    seconds: float

    @property
    def content_bytes(self) -> int:
        return sum(f.size for f in self.layer.files)


def source_date_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` from the environment (default 0), checked."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not value.isdigit():
        raise ModelyardError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {value!r}")
    return int(value)


def build_and_publish(
    store: Store,
    files: Sequence[LayerFile],
    *,
    name: str,
    tags: Sequence[str],
    metadata: ImageMetadata,
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
    threads: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    check_layer: Callable[[LayerResult], None] | None = None,
    catalog: dict[str, Any] | None = None,
) -> BuiltImage:
    """Write the layer into the store, then the image blobs, then ``tags``, then the catalog record.

    ``check_layer`` sees the written layer (its files' digests) before the blob is published; if it
    raises, nothing is. ``catalog`` holds extra fields for the catalog record (Hub metadata).
    """
    check_name(name)
    for tag in tags:
        check_tag(tag)
    started = time.monotonic()
    with store.blob_writer() as blob:
        layer = estargz.write_layer(files, blob, mtime=metadata.created, threads=threads, on_progress=on_progress)
        if check_layer is not None:
            check_layer(layer)
        blob.commit(expected=layer.digest)
    image = build_image(layer, metadata, platforms)
    for item in image.blobs_in_publish_order():
        store.put_blob(item.data)
    for tag in tags:
        store.put_tag(name, tag, image.index.descriptor)
    built = BuiltImage(name, tuple(tags), image.index.descriptor, image, layer, time.monotonic() - started)
    store.put_catalog(name, catalog_record(built, metadata, platforms, catalog or {}))
    return built


def catalog_record(
    built: BuiltImage, metadata: ImageMetadata, platforms: Sequence[Platform], extra: dict[str, Any]
) -> dict[str, Any]:
    """The catalog record of DESIGN §3: what the site shows about one image.

    ``extra`` holds what the Hub said (:meth:`RepoSnapshot.metadata`) and the model card text. The
    record holds no clock time: the same input gives the same record (the site reads when it was
    published from the store).
    """
    return {
        **extra,
        "name": built.name,
        "title": metadata.title,
        "source": metadata.source,
        "revision": metadata.revision,
        "tags": list(built.tags),
        "index_digest": built.index.digest,
        "layer_digest": built.layer.digest,
        "layer_size": built.layer.size,
        "toc_digest": built.layer.toc_digest,
        "diff_id": built.layer.diff_id,
        "platforms": [str(p) for p in platforms],
        "manifests": [
            {"platform": str(m.descriptor.platform), "digest": m.descriptor.digest, "size": m.descriptor.size}
            for m in built.image.manifests
        ],
        "format_version": FORMAT_VERSION,
        "format": FORMAT_DESCRIPTION,
        "total_size": built.content_bytes,
        "files": [{"path": f.path, "size": f.size, "sha256": hex_of(f.digest)} for f in built.layer.files],
    }
