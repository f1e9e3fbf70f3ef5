"""The KitOps ModelKit of an image: the Kitfile as config, and the eStargz blob as its one model layer.

KitOps (``kit pull``, ``kit unpack``, Jozu Hub) recognises a ModelKit by its config media type
``application/vnd.kitops.modelkit.config.v1+json`` (newer releases also by the manifest's
``artifactType``). The config is the Kitfile as JSON; each section names the digest and DiffID of its
layer, which ``kit unpack`` checks against the manifest. The model layer is
``application/vnd.kitops.modelkit.model.v1.tar+gzip``: kit reads it with Go's gzip reader (which reads
every member) and tar reader (which stops at the end-of-archive marker), so it sees the model's files
at the root of ``model.path: .`` and never the eStargz TOC that follows the marker.

Example::

    modelkit = build_modelkit(image, layer, metadata, ModelFacts(weight_format="safetensors"))
    for blob in modelkit.blobs_in_publish_order():
        store.put_blob(blob.data)
"""

from __future__ import annotations

from typing import Any

from pipeline.oci.estargz import LayerResult
from pipeline.oci.formats import MODELKIT, FormatManifest, ModelFacts
from pipeline.oci.image import MEDIA_TYPE_MANIFEST, Blob, Descriptor, Image, ImageMetadata, canonical_json

ARTIFACT_TYPE = "application/vnd.kitops.modelkit.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
MEDIA_TYPE_MODEL_LAYER = "application/vnd.kitops.modelkit.model.v1.tar+gzip"
KITFILE_VERSION = "1.0.0"


def kitfile(layer: LayerResult, metadata: ImageMetadata, facts: ModelFacts) -> dict[str, Any]:
    """The Kitfile of the image, as kit stores it in a ModelKit's config (empty fields left out)."""
    description = f"{metadata.source} at revision {metadata.revision}" if metadata.source and metadata.revision else ""
    package = {
        "name": metadata.title,
        "version": metadata.revision,
        "description": description,
        "license": metadata.licenses,
    }
    model = {
        "name": metadata.title,
        "path": ".",  # the layer holds the repository's files at its root
        "license": metadata.licenses,
        "format": facts.weight_format,
        "digest": layer.digest,
        "diffId": layer.diff_id,
    }
    return {
        "manifestVersion": KITFILE_VERSION,
        "package": {key: value for key, value in package.items() if value},
        "model": {key: value for key, value in model.items() if value},
    }


def build_modelkit(image: Image, layer: LayerResult, metadata: ImageMetadata, facts: ModelFacts) -> FormatManifest:
    """The ModelKit over ``image``'s layer, with the image index as its subject."""
    config = Blob.of(MEDIA_TYPE_CONFIG, canonical_json(kitfile(layer, metadata, facts)))
    model_layer = Descriptor(MEDIA_TYPE_MODEL_LAYER, layer.digest, layer.size, annotations=layer.annotations)
    manifest = Blob.of(
        MEDIA_TYPE_MANIFEST,
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": config.descriptor.to_json(),
                "layers": [model_layer.to_json()],
                "subject": image.index.descriptor.to_json(),
                "annotations": metadata.annotations(),
            }
        ),
    )
    return FormatManifest(MODELKIT, ARTIFACT_TYPE, config, manifest)
