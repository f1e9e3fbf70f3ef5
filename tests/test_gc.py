"""Garbage collection removes exactly the unreferenced, honours the grace period, and never breaks a tag."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.cli import main
from pipeline.errors import StoreError
from pipeline.oci.image import MEDIA_TYPE_INDEX, Descriptor, ImageMetadata
from pipeline.store import Store, blob_key
from pipeline.store.gc import collect_garbage
from pipeline.store.local import UPLOAD_BUFFER

MakeTree = Callable[[Mapping[str, bytes]], Path]
HOUR = 3600.0


def publish(store: Store, tree: MakeTree, name: str, content: bytes) -> BuiltImage:
    return build_and_publish(
        store,
        files_from_dir(tree({"config.json": content, "w.bin": content * 1000})),
        name=name,
        tags=["latest"],
        metadata=ImageMetadata(title=name),
    )


def digests(store: Store, built: BuiltImage) -> set[str]:
    return built.blob_digests


def untag(store: Store, name: str) -> None:
    """Delete every tag of ``name``: the image's and its formats'."""
    for tag in store.tags(name):
        store.delete_tag(name, tag)


def blobs(store: Store) -> set[str]:
    return {"sha256:" + info.key.rsplit("/", 1)[1] for info in store.backend.list("blobs/sha256/")}


def age(store: Store, key: str, seconds: float) -> None:
    path = store.backend.path(key)  # type: ignore[attr-defined]
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_removes_exactly_the_unreferenced(store: Store, tree: MakeTree) -> None:
    kept = publish(store, tree, "org/kept", b"kept")
    dropped = publish(store, tree, "org/dropped", b"dropped")
    untag(store, "org/dropped")
    store.backend.delete("catalog/org/dropped.json")
    for digest in blobs(store):
        age(store, blob_key(digest), 2 * HOUR)

    dry = collect_garbage(store, grace=HOUR, dry_run=True)
    assert {"sha256:" + i.key.rsplit("/", 1)[1] for i in dry.removed} == digests(store, dropped)
    assert blobs(store) == digests(store, kept) | digests(store, dropped)  # dry run deleted nothing

    report = collect_garbage(store, grace=HOUR)
    assert report.freed == sum(i.size for i in dry.removed) > 0
    assert report.kept == len(digests(store, kept))
    assert blobs(store) == digests(store, kept)
    # index, 2 manifests, 2 configs, layer; a ModelKit and a ModelPack manifest and config
    assert (
        f"removed {len(digests(store, dropped))} unreferenced blob(s)" in report.summary()
        and len(dropped.blob_digests) == 10
    )


def test_the_grace_period_keeps_young_blobs(store: Store, tree: MakeTree) -> None:
    publish(store, tree, "org/a", b"a")
    orphan = publish(store, tree, "org/b", b"b")  # like a build whose tag has not landed yet
    untag(store, "org/b")
    store.backend.delete("catalog/org/b.json")
    report = collect_garbage(store, grace=HOUR)
    assert report.removed == [] and report.young == len(digests(store, orphan))


def test_stale_uploads_are_swept(store: Store) -> None:
    killed, live = store.backend.upload(), store.backend.upload()
    killed.write(bytes(UPLOAD_BUFFER) + b"partial")  # more than the writer holds: bytes reach the file
    live.write(b"partial")
    killed._close()  # type: ignore[attr-defined]  # as a SIGKILL leaves it: no writer, the file stays
    keys = [f"uploads/{upload.path.name}" for upload in (killed, live)]  # type: ignore[attr-defined]
    for key in keys:
        age(store, key, 2 * HOUR)
    report = collect_garbage(store, grace=HOUR)
    assert [i.key for i in report.removed] == [keys[0]]
    assert [i.key for i in store.backend.list("uploads/")] == [keys[1]]  # a live writer's, however old


def test_a_catalog_record_keeps_its_image(store: Store, tree: MakeTree) -> None:
    built = publish(store, tree, "org/a", b"a")
    untag(store, "org/a")
    for digest in blobs(store):
        age(store, blob_key(digest), 2 * HOUR)
    assert collect_garbage(store, grace=HOUR).removed == []
    assert blobs(store) == digests(store, built)


def test_a_broken_tag_stops_gc_before_any_deletion(store: Store, tree: MakeTree) -> None:
    publish(store, tree, "org/a", b"a")
    store.backend.write(blob_key("sha256:" + "1" * 64), b"orphan")
    age(store, blob_key("sha256:" + "1" * 64), 2 * HOUR)
    missing = Descriptor(MEDIA_TYPE_INDEX, "sha256:" + "2" * 64, 10)
    store.backend.write(
        "repositories/org/broken/tags/latest",
        b'{"mediaType":"%s","digest":"%s","size":10}' % (missing.media_type.encode(), missing.digest.encode()),
    )
    with pytest.raises(StoreError, match="stopped before deleting anything"):
        collect_garbage(store, grace=HOUR)
    assert "sha256:" + "1" * 64 in blobs(store)


def test_the_gc_command(store: Store, tree: MakeTree, capsys: pytest.CaptureFixture[str]) -> None:
    publish(store, tree, "org/a", b"a")
    root = store.backend.url()
    assert main(["gc", "--store", root, "--dry-run", "--grace", "0s"]) == 0
    assert "would remove 0 unreferenced blob(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["gc", "--store", root, "--grace", "soon"])
    assert "is not a duration like 90s, 30m, 24h or 7d" in capsys.readouterr().err


def test_a_reused_old_blob_is_refreshed_and_kept(store: Store, tree: MakeTree) -> None:
    built = publish(store, tree, "org/a", b"a")
    untag(store, "org/a")
    store.backend.delete("catalog/org/a.json")
    for digest in blobs(store):
        age(store, blob_key(digest), 2 * HOUR)  # old and unreferenced: garbage, until...
    publish(store, tree, "org/a", b"a")  # ...a build reuses every one of them
    report = collect_garbage(store, grace=HOUR)
    assert report.removed == [] and blobs(store) == digests(store, built)
