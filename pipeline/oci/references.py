"""What an image references: the walk from an index through manifests to configs and layers.

Export copies what a tag reaches; garbage collection keeps it; push sends it. A format manifest
(ModelKit, ModelPack) also reaches its ``subject``, the image index: a ModelPack's raw layers are
virtual blobs cut out of that image's layer (:mod:`pipeline.oci.virtual`), so the image lives as
long as any of its formats does, and a copy of a format carries the image it refers to. Virtual
blobs are reached like any layer but never read here, so a walk never reports them missing.

Example::

    for descriptor in reachable(store, store.get_tag("gpt2", "latest")):
        print(descriptor.media_type, descriptor.digest)
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Descriptor
from pipeline.oci.virtual import Blobs
from pipeline.store import Store


def reachable(store: Store, root: Descriptor) -> Iterator[Descriptor]:
    """Every descriptor reachable from ``root`` (itself included), children after their parent.

    Raises NotFoundError when a referenced manifest or index is missing from the store.
    """
    yield root
    if root.media_type not in (MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST):
        return
    document = store.read_json_blob(root.digest)
    if root.media_type == MEDIA_TYPE_INDEX:
        children = document.get("manifests", [])
    else:
        children = [document["config"], *document.get("layers", [])]
        if isinstance(document.get("subject"), dict):
            children.append(document["subject"])
    for child in children:
        yield from reachable(store, Descriptor.from_json(child))


def missing(store: Store, root: Descriptor) -> list[Descriptor]:
    """What ``root`` reaches that cannot be read back at its size.

    A virtual blob (a ModelPack's raw layer) is never stored: it is present while the eStargz layer
    holding its file is. Raises NotFoundError when a referenced manifest or index is missing.
    """
    blobs = Blobs(store)
    return [descriptor for descriptor in blobs.learn(reachable(store, root)) if not blobs.present(descriptor)]
