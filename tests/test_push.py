"""Pushing to another registry (Debian's docker-registry): every digest preserved, nothing sent twice."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.errors import ModelyardError
from pipeline.oci.image import ImageMetadata
from pipeline.remote.push import push_images
from pipeline.store import Store
from tests.cncf_registry import cncf_registry
from tests.conftest import require_tool, run

MakeTree = Callable[[Mapping[str, bytes]], Path]


def test_push_preserves_every_digest(store: Store, tree: MakeTree, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    files = {"config.json": b'{"a": 1}', "w.safetensors": os.urandom(9 * 1024 * 1024)}
    built = build_and_publish(
        store,
        files_from_dir(tree(files)),
        name="org/model",
        tags=["latest", "a" * 40],
        metadata=ImageMetadata(title="org/model", revision="a" * 40),
    )
    with cncf_registry(require_tool("docker-registry"), tmp_path / "registry") as registry:
        sent: list[int] = []
        (outcome,) = push_images(store, f"{registry.host}/mirror", insecure=True, on_bytes=sent.append)
        assert outcome.digest == built.index.digest and sorted(outcome.tags) == sorted(["latest", "a" * 40])
        assert outcome.uploaded == built.layer.size + sum(c.descriptor.size for c in built.image.configs)
        assert sum(sent) == built.layer.size + sum(c.descriptor.size for c in built.image.configs)

        for tag in ("latest", "a" * 40):
            ref = f"docker://{registry.host}/mirror/org/model:{tag}"
            raw = run(skopeo, "inspect", "--tls-verify=false", "--raw", ref).stdout
            assert raw.encode() == store.read_blob(built.index.digest)  # the very bytes
            for arch in ("amd64", "arm64"):
                info = json.loads(run(skopeo, "inspect", "--tls-verify=false", "--override-arch", arch, ref).stdout)
                assert info["Digest"] == built.index.digest and info["Layers"] == [built.layer.digest]
        for manifest in built.image.manifests:
            ref = f"docker://{registry.host}/mirror/org/model@{manifest.descriptor.digest}"
            assert run(skopeo, "inspect", "--tls-verify=false", "--raw", ref).stdout.encode() == manifest.data

        (again,) = push_images(store, f"{registry.host}/mirror", insecure=True)
        assert again.uploaded == 0 and again.skipped_blobs == 3  # layer and both configs were there


def test_push_errors_are_clear(store: Store, tmp_path: Path) -> None:
    with (
        cncf_registry(require_tool("docker-registry"), tmp_path / "registry") as registry,
        pytest.raises(ModelyardError, match="has no tags"),
    ):
        push_images(store, registry.host, names=["org/none"], insecure=True)
    with pytest.raises(ModelyardError, match="not a valid OCI repository name"):
        push_images(store, "127.0.0.1:1/Bad_Prefix", insecure=True)
