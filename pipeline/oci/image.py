"""The OCI image of a model: one shared eStargz layer, a tiny config and a manifest per platform, an index.

Everything here is pure: it turns a :class:`~pipeline.oci.estargz.LayerResult` and some metadata into the
exact JSON bytes to publish. The JSON is canonical (sorted keys, no spaces), so the same inputs give
the same digests.

Example::

    image = build_image(layer, ImageMetadata(title="gpt2", source="https://huggingface.co/gpt2",
                                             revision="11c5a3d5811f50298f278a704980280950aedb10"))
    for blob in image.blobs_in_publish_order():
        store.put_blob(blob.data)
    store.put_tag("gpt2", "latest", image.index.descriptor)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.digest import sha256_digest
from pipeline.errors import InvalidNameError
from pipeline.oci.estargz import LayerResult
from pipeline.oci.format import FORMAT_ANNOTATION, FORMAT_VERSION

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_MEDIA_TYPES = (MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST)

ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_LICENSES = "org.opencontainers.image.licenses"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_INCLUDE = "dev.modelyard.include"
ANNOTATION_EXCLUDE = "dev.modelyard.exclude"


def canonical_json(value: Any) -> bytes:
    """The one serialization of JSON that modelyard publishes: sorted keys, compact, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``, e.g. ``linux/arm64`` or ``linux/arm/v7``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidNameError(f"platform {text!r} is not of the form os/architecture[/variant]")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        result = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            result["variant"] = self.variant
        return result


DEFAULT_PLATFORMS = (Platform("linux", "amd64"), Platform("linux", "arm64"))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a tag, an index or a manifest points at."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str = ""  # what a referrers listing says the manifest is (OCI 1.1)

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            result["artifactType"] = self.artifact_type
        if self.annotations:
            result["annotations"] = dict(self.annotations)
        if self.platform is not None:
            result["platform"] = self.platform.to_json()
        return result

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=str(value["mediaType"]),
            digest=str(value["digest"]),
            size=int(value["size"]),
            annotations=dict(value.get("annotations") or {}),
            artifact_type=str(value.get("artifactType") or ""),
        )


@dataclass(frozen=True)
class Blob:
    """Bytes to publish and the descriptor that points at them."""

    descriptor: Descriptor
    data: bytes

    @classmethod
    def of(cls, media_type: str, data: bytes, platform: Platform | None = None) -> Blob:
        return cls(Descriptor(media_type, sha256_digest(data), len(data), platform=platform), data)


@dataclass(frozen=True)
class ImageMetadata:
    """What the image says about where it came from."""

    title: str  # the Hugging Face id, as curated
    source: str = ""  # the Hugging Face URL
    revision: str = ""  # the Hugging Face commit sha
    licenses: str = ""  # license id from the model card, when known
    created: int = 0  # SOURCE_DATE_EPOCH
    include: tuple[str, ...] = ()  # the file selection of models.yaml, recorded as provenance
    exclude: tuple[str, ...] = ()

    def annotations(self) -> dict[str, str]:
        """The OCI annotations (and config labels); empty values are left out."""
        result = {
            ANNOTATION_SOURCE: self.source,
            ANNOTATION_REVISION: self.revision,
            ANNOTATION_TITLE: self.title,
            ANNOTATION_LICENSES: self.licenses,
            ANNOTATION_CREATED: rfc3339(self.created),
            FORMAT_ANNOTATION: FORMAT_VERSION,
            ANNOTATION_INCLUDE: json.dumps(list(self.include)) if self.include else "",
            ANNOTATION_EXCLUDE: json.dumps(list(self.exclude)) if self.exclude else "",
        }
        return {key: value for key, value in result.items() if value}


@dataclass(frozen=True)
class Image:
    """The blobs of one model image, apart from the layer itself."""

    index: Blob
    manifests: tuple[Blob, ...]
    configs: tuple[Blob, ...]
    layer: Descriptor

    def blobs_in_publish_order(self) -> list[Blob]:
        """Configs, then manifests, then the index: each is published after everything it points at."""
        return [*self.configs, *self.manifests, self.index]


def build_image(
    layer: LayerResult, metadata: ImageMetadata, platforms: Sequence[Platform] = DEFAULT_PLATFORMS
) -> Image:
    """Build the index, manifests and configs that wrap ``layer`` for each platform."""
    if not platforms:
        raise InvalidNameError("an image needs at least one platform")
    annotations = metadata.annotations()
    layer_descriptor = Descriptor(MEDIA_TYPE_LAYER, layer.digest, layer.size, annotations=layer.annotations)
    created = rfc3339(metadata.created)
    configs, manifests = [], []
    for platform in platforms:
        config = Blob.of(
            MEDIA_TYPE_CONFIG,
            canonical_json(
                {
                    **platform.to_json(),
                    "config": {"Labels": annotations},
                    "created": created,
                    "history": [
                        {
                            "created": created,
                            "created_by": f"modelyard (format {FORMAT_VERSION})",
                            "comment": f"{metadata.title}@{metadata.revision or 'local'}",
                        }
                    ],
                    "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                }
            ),
        )
        manifest = Blob.of(
            MEDIA_TYPE_MANIFEST,
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_MANIFEST,
                    "config": config.descriptor.to_json(),
                    "layers": [layer_descriptor.to_json()],
                    "annotations": annotations,
                }
            ),
            platform=platform,
        )
        configs.append(config)
        manifests.append(manifest)
    index = Blob.of(
        MEDIA_TYPE_INDEX,
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [m.descriptor.to_json() for m in manifests],
                "annotations": annotations,
            }
        ),
    )
    return Image(index, tuple(manifests), tuple(configs), layer_descriptor)
