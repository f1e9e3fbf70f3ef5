"""What an image references: the walk from an index through manifests to configs and layers.

Export copies what a tag reaches; garbage collection keeps it.

Example::

    for descriptor in reachable(store, store.get_tag("gpt2", "latest")):
        print(descriptor.media_type, descriptor.digest)
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Descriptor
from pipeline.store import Store


def reachable(store: Store, root: Descriptor) -> Iterator[Descriptor]:
    """Every descriptor reachable from ``root`` (itself included), children after their parent.

    Raises NotFoundError when something referenced is missing from the store.
    """
    yield root
    if root.media_type not in (MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST):
        return
    document = store.read_json_blob(root.digest)
    if root.media_type == MEDIA_TYPE_INDEX:
        children = document.get("manifests", [])
    else:
        children = [document["config"], *document.get("layers", [])]
    for child in children:
        yield from reachable(store, Descriptor.from_json(child))
