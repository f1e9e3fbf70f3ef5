"""What the tagged manifests of a repository say about each other: referrers, and virtual blobs.

A format manifest (ModelKit, ModelPack) names the image index as its ``subject``; the referrers API
answers, for the index, every such manifest with its ``artifactType``. A ModelPack's raw layers are
virtual blobs of the index's eStargz layer. Both come from one walk over the repository's tags: only
what is published (tagged) counts, so a registry never serves bytes for a digest nobody published.

Example::

    links = scan_repository(store, "org/model")
    for referrer in links.referrers.get(index_digest, ()):
        print(referrer.artifact_type, referrer.digest)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.image import MEDIA_TYPE_MANIFEST, Descriptor
from pipeline.oci.virtual import VirtualBlob, virtual_layers
from pipeline.store import Store

log = logging.getLogger(__name__)
ReadJson = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class RepositoryLinks:
    referrers: dict[str, tuple[Descriptor, ...]] = field(default_factory=dict)  # by subject digest
    virtual: dict[str, VirtualBlob] = field(default_factory=dict)  # by the virtual blob's digest

    def referrers_of(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """The manifests that name ``subject``, only those of ``artifact_type`` when it is given."""
        found = self.referrers.get(subject, ())
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]


def referrer_descriptor(digest: str, size: int, document: dict[str, Any]) -> Descriptor:
    """How a referrers listing describes a manifest: its artifactType (else its config's media type)
    and its annotations (distribution-spec v1.1, "Listing Referrers")."""
    artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType") or ""
    return Descriptor(
        MEDIA_TYPE_MANIFEST,
        digest,
        size,
        annotations=dict(document.get("annotations") or {}),
        artifact_type=str(artifact_type),
    )


def links_of(manifests: Iterable[tuple[Descriptor, dict[str, Any]]], read_json: ReadJson) -> RepositoryLinks:
    """The links among ``manifests`` (descriptor and parsed document of each)."""
    referrers: dict[str, dict[str, Descriptor]] = {}
    virtual: dict[str, VirtualBlob] = {}
    for descriptor, document in manifests:
        subject = document.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
            listed = referrers.setdefault(subject["digest"], {})
            listed[descriptor.digest] = referrer_descriptor(descriptor.digest, descriptor.size, document)
        try:
            virtual.update(virtual_layers(document, read_json))
        except (NotFoundError, IntegrityError) as error:  # its image is gone or damaged: it serves nothing
            log.warning("manifest %s: its virtual blobs cannot be served: %s", descriptor.digest, error)
    ordered = {
        subject: tuple(sorted(found.values(), key=lambda d: (d.artifact_type, d.digest)))
        for subject, found in referrers.items()
    }
    return RepositoryLinks(ordered, virtual)


def scan_repository(store: Store, name: str, read_json: ReadJson | None = None) -> RepositoryLinks:
    """The links among the manifests ``name``'s tags point at.

    ``read_json`` reads a manifest by digest (default: the store's, checked against the digest); the
    registry passes a cached one.
    """
    read = read_json or store.read_json_blob
    tagged: dict[str, Descriptor] = {}
    for tag in store.tags(name):
        descriptor = store.get_tag(name, tag)
        if descriptor is not None and descriptor.media_type == MEDIA_TYPE_MANIFEST:
            tagged[descriptor.digest] = descriptor
    manifests = []
    for descriptor in tagged.values():
        try:
            manifests.append((descriptor, read(descriptor.digest)))
        except (NotFoundError, IntegrityError) as error:  # the manifest endpoint reports it; links skip it
            log.warning("%s: tagged manifest %s unreadable: %s", name, descriptor.digest, error)
    return links_of(manifests, read)
