"""Export an image from the store to an OCI image layout directory (``skopeo copy oci:DIR:TAG ...``).

The layout gets every blob the tag reaches (index, manifests, configs, the layer; for a format tag
such as ``latest-modelpack`` also its virtual blobs, materialized) and an ``index.json`` entry named
by ``org.opencontainers.image.ref.name``. Exporting several tags into the same directory adds to it.

Example::

    export_oci_layout(store, "org/model", "latest", Path("out"))
    # then: skopeo inspect oci:out:latest
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.digest import HashingWriter, hex_of
from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.image import MEDIA_TYPE_INDEX, Descriptor, canonical_json
from pipeline.oci.references import reachable
from pipeline.oci.virtual import Blobs
from pipeline.store import Store

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def export_oci_layout(store: Store, name: str, tag: str, destination: Path) -> Descriptor:
    """Copy ``name:tag`` and everything it references into the OCI layout at ``destination``."""
    root = store.get_tag(name, tag)
    if root is None:
        raise NotFoundError(f"{name}:{tag} is not in the store {store.backend.url()}")
    blob_dir = destination / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    blobs = Blobs(store)
    for descriptor in blobs.learn(reachable(store, root)):
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        target = blob_dir / hex_of(descriptor.digest)
        if target.exists() and target.stat().st_size == descriptor.size:
            continue
        _copy_blob(blobs, descriptor, target)
    (destination / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index_path = destination / "index.json"
    entries = []
    if index_path.exists():
        entries = [
            m
            for m in json.loads(index_path.read_bytes()).get("manifests", [])
            if m.get("annotations", {}).get(REF_NAME_ANNOTATION) != tag
        ]
    entries.append(Descriptor(root.media_type, root.digest, root.size, {REF_NAME_ANNOTATION: tag}).to_json())
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": entries}
    index_path.write_bytes(canonical_json(index))
    return root


def _copy_blob(blobs: Blobs, descriptor: Descriptor, target: Path) -> None:
    temp = target.with_suffix(".part")
    with open(temp, "wb") as handle:
        writer = HashingWriter(handle)
        for piece in blobs.read_range(descriptor, 0, descriptor.size):
            writer.write(piece)
    if writer.digest != descriptor.digest:
        temp.unlink()
        raise IntegrityError(f"blob {descriptor.digest} in the store reads back as {writer.digest}")
    temp.replace(target)
