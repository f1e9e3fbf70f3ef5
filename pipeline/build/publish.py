"""Build one image from a file list and publish it to a store, in the order that keeps readers safe.

Publish order (DESIGN §3): the layer blob (streamed straight into the store), then configs, manifests,
the index, then the other formats' configs and manifests (ModelKit, ModelPack: they name the index as
their subject and reuse its layer), then the tags (the image's, then each format's
``<tag>-modelkit``, ``<tag>-modelpack``), then the catalog record. Killed at any moment, the store
holds nothing half-written; run again, it converges.

Example::

    built = build_and_publish(store, files_from_dir("model"), name="org/model", tags=["latest"],
                              metadata=ImageMetadata(title="org/model", source="", revision=""))
    print(built.index.digest)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.digest import hex_of
from pipeline.errors import ModelyardError
from pipeline.names import check_name, check_tag
from pipeline.oci import estargz
from pipeline.oci.estargz import FileRecord, LayerFile, LayerResult
from pipeline.oci.format import FORMAT_DESCRIPTION, FORMAT_VERSION
from pipeline.oci.formats import MODELKIT, MODELPACK, FormatManifest, ModelFacts, format_tag
from pipeline.oci.image import DEFAULT_PLATFORMS, Descriptor, Image, ImageMetadata, Platform, build_image
from pipeline.oci.modelkit import ARTIFACT_TYPE as MODELKIT_ARTIFACT_TYPE
from pipeline.oci.modelkit import build_modelkit
from pipeline.oci.modelpack import ARTIFACT_TYPE as MODELPACK_ARTIFACT_TYPE
from pipeline.oci.modelpack import build_modelpack
from pipeline.oci.referrers import scan_repository
from pipeline.store import Store


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tags: tuple[str, ...]
    index: Descriptor
    image: Image
    layer: LayerResult
    seconds: float
    formats: tuple[FormatManifest, ...] = ()

    @property
    def content_bytes(self) -> int:
        return sum(f.size for f in self.layer.files)

    @property
    def blob_digests(self) -> set[str]:
        """Every blob the publish stored: the layer, the image's JSON and the formats' (virtual ones are not)."""
        json_blobs = [
            *self.image.blobs_in_publish_order(),
            *(b for f in self.formats for b in f.blobs_in_publish_order()),
        ]
        return {self.layer.digest, *(blob.descriptor.digest for blob in json_blobs)}


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
    check_file: Callable[[FileRecord], None] | None = None,
    catalog: dict[str, Any] | None = None,
) -> BuiltImage:
    """Write the layer into the store, then the image blobs, then ``tags``, then the catalog record.

    ``check_layer`` sees the written layer (its files' digests) before the blob is published; if it
    raises, nothing is. ``check_file`` sees each file's record as soon as the writer has digested it:
    raising there stops the layer (and its upload) at that file. ``catalog`` holds extra fields for
    the catalog record (Hub metadata).
    """
    check_name(name)
    for tag in tags:
        check_tag(tag)
    started = time.monotonic()
    with store.blob_writer() as blob:
        layer = estargz.write_layer(
            files, blob, mtime=metadata.created, threads=threads, on_progress=on_progress, on_file=check_file
        )
        if check_layer is not None:
            check_layer(layer)
        blob.commit(expected=layer.digest)
    image = build_image(layer, metadata, platforms)
    formats = build_formats(image, layer, metadata, ModelFacts.of((f.path for f in layer.files), catalog or {}))
    for item in [*image.blobs_in_publish_order(), *(b for f in formats for b in f.blobs_in_publish_order())]:
        store.put_blob(item.data)
    for tag in tags:
        tag_image(store, name, tag, image.index.descriptor, {f.name: f.descriptor for f in formats})
    built = BuiltImage(name, tuple(tags), image.index.descriptor, image, layer, time.monotonic() - started, formats)
    store.put_catalog(name, catalog_record(built, metadata, platforms, catalog or {}))
    return built


def tag_image(store: Store, name: str, tag: str, index: Descriptor, formats: Mapping[str, Descriptor]) -> None:
    """Point ``tag`` at the image index and ``<tag>-<format>`` at each of its formats."""
    store.put_tag(name, tag, index)
    for format_name, descriptor in formats.items():
        store.put_tag(name, format_tag(tag, format_name), descriptor)


def published_formats(store: Store, name: str, index: Descriptor) -> dict[str, Descriptor]:
    """The format manifests published for the image ``index`` (its referrers), by format name."""
    names = {MODELKIT_ARTIFACT_TYPE: MODELKIT, MODELPACK_ARTIFACT_TYPE: MODELPACK}
    referrers = scan_repository(store, name).referrers_of(index.digest)
    return {names[d.artifact_type]: d for d in referrers if d.artifact_type in names}


def retag(store: Store, name: str, tags: Sequence[str], index: Descriptor) -> list[str] | None:
    """Point ``tags`` (and their format tags) at an image already published; the tags that moved.

    None when the image has no formats (published before they existed): it is to be built again.
    """
    formats = published_formats(store, name, index)
    if MODELKIT not in formats:
        return None
    moved = []
    for tag in tags:
        wanted = {tag: index, **{format_tag(tag, f): d for f, d in formats.items()}}
        if any(getattr(store.get_tag(name, t), "digest", None) != d.digest for t, d in wanted.items()):
            tag_image(store, name, tag, index, formats)
            moved.append(tag)
    return moved


def build_formats(
    image: Image, layer: LayerResult, metadata: ImageMetadata, facts: ModelFacts
) -> tuple[FormatManifest, ...]:
    """The ModelKit and ModelPack manifests over ``image`` (a ModelPack only when it can exist)."""
    modelpack = build_modelpack(image, layer, metadata, facts)
    return (build_modelkit(image, layer, metadata, facts), *((modelpack,) if modelpack is not None else ()))


def catalog_record(
    built: BuiltImage, metadata: ImageMetadata, platforms: Sequence[Platform], extra: dict[str, Any]
) -> dict[str, Any]:
    """The catalog record of DESIGN §3: what the site shows about one image.

    ``formats`` has one entry per other format of the image, by name (``modelkit``, ``modelpack``):
    ``{"mediaType", "artifactType", "digest", "size", "tags"}``, ``tags`` being its tags
    (``<tag>-modelkit``...) in the order of ``tags``.

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
        "formats": {
            f.name: {**f.descriptor.to_json(), "tags": [format_tag(tag, f.name) for tag in built.tags]}
            for f in built.formats
        },
    }
