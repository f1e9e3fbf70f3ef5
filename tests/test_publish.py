"""Building into the store: publish order, atomicity, and real OCI clients reading the result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.errors import SourceChangedError, StoreError
from pipeline.oci.estargz import LayerFile
from pipeline.oci.image import MEDIA_TYPE_INDEX, Descriptor, ImageMetadata, Platform
from pipeline.oci.layout import export_oci_layout
from pipeline.oci.references import reachable
from pipeline.store import Store
from tests.conftest import require_tool, run, verify_with_reference, with_formats

MakeTree = Callable[[Mapping[str, bytes]], Path]
METADATA = ImageMetadata(
    title="Org/Model", source="https://huggingface.co/Org/Model", revision="a" * 40, licenses="apache-2.0"
)


def stored_keys(store: Store) -> list[str]:
    return sorted(info.key for info in store.backend.list(""))


def test_build_publishes_blobs_then_tags_then_catalog(store: Store, tree: MakeTree) -> None:
    built = build_and_publish(
        store,
        files_from_dir(tree({"config.json": b"{}", "sub/w.bin": b"w" * 5000})),
        name="org/model",
        tags=["latest", "a" * 40],
        metadata=METADATA,
    )
    assert store.tags("org/model") == with_formats(["latest", "a" * 40])
    assert store.repositories() == ["org/model"]
    tag = store.get_tag("org/model", "latest")
    assert tag == Descriptor(MEDIA_TYPE_INDEX, built.index.digest, built.index.size)
    # Everything the tag reaches is stored and reads back under its digest.
    digests = [d.digest for d in reachable(store, built.index)]
    assert len(digests) == 1 + 2 + 2 + 2  # index, 2 manifests, 2 configs, the shared layer twice
    assert all(store.has_blob(d) for d in digests) and set(digests) <= built.blob_digests
    index = store.read_json_blob(built.index.digest)
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    manifest = store.read_json_blob(index["manifests"][1]["digest"])
    (layer,) = manifest["layers"]
    assert layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"] == built.layer.toc_digest
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["annotations"]["org.opencontainers.image.revision"] == "a" * 40
    config = store.read_json_blob(manifest["config"]["digest"])
    assert config["architecture"] == "arm64" and config["created"] == "1970-01-01T00:00:00Z"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [built.layer.diff_id]}
    assert config["config"]["Labels"]["org.opencontainers.image.licenses"] == "apache-2.0"
    record = store.get_catalog("org/model")
    assert record is not None and record["index_digest"] == built.index.digest
    assert record["files"][0] == {"path": "config.json", "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    assert not any(key.startswith("uploads/") for key in stored_keys(store))


def test_a_failed_build_leaves_nothing_behind(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    files = [LayerFile("f.bin", 11, lambda: open(path, "rb"))]  # listed bigger than it is
    with pytest.raises(SourceChangedError):
        build_and_publish(store, files, name="org/model", tags=["latest"], metadata=METADATA)
    assert stored_keys(store) == []


def test_a_tag_never_points_at_a_missing_blob(store: Store) -> None:
    with pytest.raises(StoreError, match="is not in the store"):
        store.put_tag("org/model", "latest", Descriptor(MEDIA_TYPE_INDEX, "sha256:" + "0" * 64, 1))


def test_rebuilding_converges_to_the_same_store(store: Store, tree: MakeTree) -> None:
    root = tree({"a.bin": b"a" * 100_000})
    first = build_and_publish(store, files_from_dir(root), name="org/model", tags=["latest"], metadata=METADATA)
    keys = stored_keys(store)
    second = build_and_publish(store, files_from_dir(root), name="org/model", tags=["latest"], metadata=METADATA)
    assert first.index == second.index and stored_keys(store) == keys


def test_skopeo_reads_the_exported_layout(store: Store, tree: MakeTree, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    source = tree({"config.json": b'{"a": 1}', "1_Pooling/config.json": b"{}", "w.safetensors": b"\x01" * 300_000})
    built = build_and_publish(
        store,
        files_from_dir(source),
        name="org/model",
        tags=["latest"],
        metadata=METADATA,
        platforms=[Platform("linux", "amd64"), Platform("linux", "arm64")],
    )
    layout = tmp_path / "oci"
    export_oci_layout(store, "org/model", "latest", layout)

    raw = json.loads(run(skopeo, "inspect", "--raw", f"oci:{layout}:latest").stdout)
    assert raw["mediaType"] == MEDIA_TYPE_INDEX
    assert {m["platform"]["architecture"] for m in raw["manifests"]} == {"amd64", "arm64"}
    for arch in ("amd64", "arm64"):
        info = json.loads(run(skopeo, "--override-arch", arch, "inspect", f"oci:{layout}:latest").stdout)
        assert info["Architecture"] == arch and info["Layers"] == [built.layer.digest]

    copy = tmp_path / "copy"
    run(skopeo, "copy", "--all", "--preserve-digests", f"oci:{layout}:latest", f"dir:{copy}")
    for blob in copy.iterdir():
        if len(blob.name) == 64:  # dir: names blobs by their hex digest
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    layer_copy = copy / built.layer.digest.removeprefix("sha256:")
    assert layer_copy.exists()
    verify_with_reference(layer_copy, built.layer)
