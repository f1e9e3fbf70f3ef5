"""Garbage collection: remove blobs no tag reaches, and temporaries left by killed uploads.

Mark and sweep, safe beside a build that runs at the same time:

1. list the candidates (blobs, temporaries) *first*;
2. mark every blob reachable from every tag and catalog record;
3. sweep candidates that are unmarked *and* older than the grace period.

A build publishes blobs before the tag that references them. Its new blobs are younger than the grace
period, so they survive until its tag lands; a blob it reuses is refreshed (``Store.refresh_blob``) so
it counts as young too, and each candidate is looked at again just before it is deleted. Anything
wrong while marking (a tag pointing at a missing blob, a store error) stops the collection before
anything is deleted.

Temporaries of uploads (:func:`sweep_uploads`, which every build also runs first) go when they are
provably abandoned (a local temporary whose writer's lock is gone: its process was killed) or, where
the backend cannot tell (S3 objects and multipart uploads), once older than the grace period. One a
live process still writes is never removed.

Example::

    report = collect_garbage(open_store("store"), grace=24 * 3600, dry_run=True)
    print(report.summary())
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.errors import ModelyardError, StoreError
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Descriptor
from pipeline.oci.references import reachable
from pipeline.store import ObjectInfo, Store
from pipeline.store.backend import UPLOADS_PREFIX
from pipeline.store.store import BLOBS_PREFIX

DEFAULT_GRACE = 24 * 3600.0


@dataclass
class GcReport:
    removed: list[ObjectInfo] = field(default_factory=list)  # unreferenced blobs and stale temporaries
    kept: int = 0  # referenced blobs
    young: int = 0  # unreferenced, but within the grace period
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(info.size for info in self.removed)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        blobs = sum(info.key.startswith(BLOBS_PREFIX) for info in self.removed)
        uploads = len(self.removed) - blobs
        return (
            f"{verb} {blobs} unreferenced blob(s) and {uploads} stale upload(s), {self.freed:,} bytes; "
            f"kept {self.kept} referenced blob(s) and {self.young} younger than the grace period"
        )


def live_digests(store: Store) -> set[str]:
    """Every digest reachable from a tag, or from the index (and formats) a catalog record shows."""
    live: set[str] = set()
    for name in sorted(set(store.repositories()) | set(store.catalog_names())):
        roots = [store.get_tag(name, tag) for tag in store.tags(name)]
        record = store.get_catalog(name) or {}
        index = record.get("index_digest")
        if isinstance(index, str) and store.has_blob(index):
            roots.append(Descriptor(MEDIA_TYPE_INDEX, index, store.blob_size(index) or 0))
        for shown in (record.get("formats") or {}).values():  # the other formats the record shows
            if isinstance(shown, dict) and store.has_blob(str(shown.get("digest"))):
                roots.append(Descriptor(MEDIA_TYPE_MANIFEST, str(shown["digest"]), int(shown.get("size", 0))))
        for root in roots:
            if root is not None and root.digest not in live:
                live.update(d.digest for d in reachable(store, root))
    return live


def collect_garbage(
    store: Store, *, grace: float = DEFAULT_GRACE, dry_run: bool = False, now: float | None = None
) -> GcReport:
    """Sweep what no tag or catalog record reaches and is older than ``grace`` seconds, and stale uploads."""
    candidates = list(store.backend.list(BLOBS_PREFIX))
    try:
        live = live_digests(store)
    except (ModelyardError, KeyError, ValueError) as err:
        raise StoreError(f"garbage collection stopped before deleting anything: {err}") from err
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    for info in candidates:
        if info.key.startswith(BLOBS_PREFIX) and f"sha256:{info.key[len(BLOBS_PREFIX) :]}" in live:
            report.kept += 1
            continue
        # A build may have reused (and refreshed) a blob since it was listed: look again before deleting.
        current = store.backend.stat(info.key) if now - info.modified >= grace else info
        if current is None:
            continue
        if now - current.modified < grace:
            report.young += info.key.startswith(BLOBS_PREFIX)
            continue
        report.removed.append(current)
        if not dry_run:
            store.backend.delete(info.key)
    report.removed += sweep_uploads(store, grace=grace, dry_run=dry_run, now=now)
    return report


def sweep_uploads(
    store: Store, *, grace: float = DEFAULT_GRACE, dry_run: bool = False, now: float | None = None
) -> list[ObjectInfo]:
    """Remove the temporaries of uploads that no process will finish; what was (or would be) removed.

    A temporary goes when its backend proves its writer gone (a killed build's local ``.part``), or
    when the backend cannot tell and it is older than ``grace`` seconds; S3 multipart uploads never
    completed go after ``grace`` too.
    """
    now = time.time() if now is None else now
    removed = []
    for info in store.backend.list(UPLOADS_PREFIX):
        in_progress = store.backend.upload_in_progress(info.key)
        if in_progress is False or (in_progress is None and now - info.modified >= grace):
            removed.append(info)
            if not dry_run:
                store.backend.delete(info.key)
    for upload in store.backend.incomplete_uploads():
        if now - upload.started >= grace:
            removed.append(ObjectInfo(upload.key, 0, upload.started))
            if not dry_run:
                store.backend.abort_incomplete(upload)
    return removed
