"""The CNCF ModelPack of an image: one raw layer per file, each a virtual blob of the eStargz layer.

The model-spec (github.com/modelpack/model-spec, ``docs/spec.md`` and ``docs/config.md``) asks for an
OCI image manifest with ``artifactType`` ``application/vnd.cncf.model.manifest.v1+json``, a config
``application/vnd.cncf.model.config.v1+json`` (``descriptor``, ``config``, ``modelfs.diffIds``) and
model layers; ``.raw`` layers are single files, unarchived and uncompressed, named by the
``org.cncf.model.filepath`` annotation. A raw layer's digest is then the file's own sha256 (for
Hugging Face LFS files, the Hub's own digest) and its DiffID the same digest.

Docker Model Runner pulls these manifests as they are (``pkg/distribution`` recognises the
artifactType and the config media type): it takes the weight format from ``config.format`` and puts
every file at its ``org.cncf.model.filepath``. It picks the first weight layer as the model file, so
the weights of the chosen format come first; the other layers follow in path order.

Example::

    modelpack = build_modelpack(image, layer, metadata, ModelFacts(weight_format="safetensors"))
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.oci.estargz import FileRecord, LayerResult
from pipeline.oci.formats import MODELPACK, WEIGHT_EXTENSIONS, FormatManifest, ModelFacts, is_weight
from pipeline.oci.image import (
    MEDIA_TYPE_MANIFEST,
    Blob,
    Descriptor,
    Image,
    ImageMetadata,
    canonical_json,
    rfc3339,
)
from pipeline.oci.tarball import FILE_MODE

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.cncf.model.config.v1+json"
MEDIA_TYPE_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MEDIA_TYPE_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
MEDIA_TYPE_DOC = "application/vnd.cncf.model.doc.v1.raw"
MEDIA_TYPE_CODE = "application/vnd.cncf.model.code.v1.raw"
RAW_MEDIA_TYPES = (MEDIA_TYPE_WEIGHT, MEDIA_TYPE_WEIGHT_CONFIG, MEDIA_TYPE_DOC, MEDIA_TYPE_CODE)

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_TITLE = "org.opencontainers.image.title"
MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # what registries accept (distribution-spec); past it, no ModelPack

_DOC_NAMES = ("readme", "license", "licence", "copying", "notice", "authors", "citation", "changelog")
_DOC_EXTENSIONS = (".md", ".rst", ".pdf")
_CODE_EXTENSIONS = (".py", ".ipynb", ".sh", ".js", ".ts", ".c", ".cc", ".cpp", ".cu", ".h", ".rs", ".go", ".java")
_TYPEFLAG_REGULAR = 0  # as modctl writes it: the number, not tar's character "0"


def media_type_of(path: str) -> str:
    """The ModelPack raw media type of a repository file: weights, docs, code, or config (the rest)."""
    name = path.rsplit("/", 1)[-1].lower()
    if is_weight(name):
        return MEDIA_TYPE_WEIGHT
    if name.startswith(_DOC_NAMES) or name.endswith(_DOC_EXTENSIONS):
        return MEDIA_TYPE_DOC
    if name.endswith(_CODE_EXTENSIONS):
        return MEDIA_TYPE_CODE
    return MEDIA_TYPE_WEIGHT_CONFIG


def layer_order(files: tuple[FileRecord, ...], weight_format: str) -> list[FileRecord]:
    """The weights of ``weight_format`` first (the file a runtime loads), then every file in path order."""
    extensions = dict(WEIGHT_EXTENSIONS).get(weight_format, ())
    return sorted(files, key=lambda f: not (extensions and f.path.lower().endswith(extensions)))


def model_config(layers: list[FileRecord], metadata: ImageMetadata, facts: ModelFacts) -> dict[str, Any]:
    """The ModelPack config document (it validates against the spec's ``config-schema.json``)."""
    descriptor: dict[str, Any] = {
        "createdAt": rfc3339(metadata.created),
        "name": metadata.title,
        "sourceURL": metadata.source,
        "revision": metadata.revision,
        "licenses": [metadata.licenses] if metadata.licenses else [],
    }
    config = {"format": facts.weight_format, "paramSize": facts.param_size, "precision": facts.precision}
    return {
        "descriptor": {key: value for key, value in descriptor.items() if value},
        "config": {key: value for key, value in config.items() if value},
        "modelfs": {"type": "layers", "diffIds": [f.digest for f in layers]},
    }


def raw_layer(file: FileRecord, mtime: int) -> Descriptor:
    """The raw layer of one file: its digest is the file's sha256, so its bytes are a virtual blob."""
    metadata = {
        "name": file.path.rsplit("/", 1)[-1],
        "mode": FILE_MODE,
        "uid": 0,
        "gid": 0,
        "size": file.size,
        "mtime": rfc3339(mtime),
        "typeflag": _TYPEFLAG_REGULAR,
    }
    annotations = {
        ANNOTATION_FILEPATH: file.path,
        ANNOTATION_TITLE: file.path,
        ANNOTATION_FILE_METADATA: json.dumps(metadata, separators=(",", ":")),
    }
    return Descriptor(media_type_of(file.path), file.digest, file.size, annotations=annotations)


def build_modelpack(
    image: Image, layer: LayerResult, metadata: ImageMetadata, facts: ModelFacts
) -> FormatManifest | None:
    """The ModelPack over ``image``'s layer, with the image index as its subject.

    None when the model has no files, or so many that the manifest would pass the size registries
    accept.
    """
    files = layer_order(layer.files, facts.weight_format)
    if not files:
        return None
    config = Blob.of(MEDIA_TYPE_CONFIG, canonical_json(model_config(files, metadata, facts)))
    manifest = Blob.of(
        MEDIA_TYPE_MANIFEST,
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": config.descriptor.to_json(),
                "layers": [raw_layer(f, metadata.created).to_json() for f in files],
                "subject": image.index.descriptor.to_json(),
                "annotations": metadata.annotations(),
            }
        ),
    )
    if manifest.descriptor.size > MAX_MANIFEST_SIZE:
        log.warning(
            "%s: no ModelPack: its %d files make a %d-byte manifest, past the %d bytes registries accept",
            metadata.title,
            len(files),
            manifest.descriptor.size,
            MAX_MANIFEST_SIZE,
        )
        return None
    return FormatManifest(MODELPACK, ARTIFACT_TYPE, config, manifest)
