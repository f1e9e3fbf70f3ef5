"""Pushing to another registry (Debian's docker-registry): every digest preserved, nothing sent twice."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.errors import ModelyardError
from pipeline.oci.image import MEDIA_TYPE_INDEX, ImageMetadata
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
    kit, pack = built.formats
    image_bytes = built.layer.size + sum(c.descriptor.size for c in built.image.configs)
    file_bytes = sum(f.size for f in built.layer.files)  # the ModelPack's virtual blobs, materialized
    with cncf_registry(require_tool("docker-registry"), tmp_path / "registry") as registry:
        sent: list[int] = []
        outcomes = push_images(store, f"{registry.host}/mirror", insecure=True, on_bytes=sent.append)
        by_digest = {o.digest: o for o in outcomes}
        assert list(by_digest) == [built.index.digest, kit.descriptor.digest, pack.descriptor.digest]
        outcome = by_digest[built.index.digest]
        assert sorted(outcome.tags) == sorted(["latest", "a" * 40])
        assert sorted(by_digest[pack.descriptor.digest].tags) == sorted(["latest-modelpack", "a" * 40 + "-modelpack"])
        assert outcome.uploaded == image_bytes
        assert by_digest[kit.descriptor.digest].uploaded == kit.config.descriptor.size  # the layer is the image's
        assert by_digest[pack.descriptor.digest].uploaded == pack.config.descriptor.size + file_bytes
        assert sum(sent) == image_bytes + kit.config.descriptor.size + pack.config.descriptor.size + file_bytes

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
        for format_manifest in built.formats:
            for tag in ("latest", "a" * 40):
                ref = f"docker://{registry.host}/mirror/org/model:{tag}-{format_manifest.name}"
                assert (
                    run(skopeo, "inspect", "--tls-verify=false", "--raw", ref).stdout.encode()
                    == format_manifest.manifest.data
                )
        for layer in json.loads(pack.manifest.data)["layers"]:  # the virtual blobs, stored there under their digests
            blob = httpx.get(f"{registry.url}/v2/mirror/org/model/blobs/{layer['digest']}", follow_redirects=True)
            assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
            assert blob.content == files[layer["annotations"]["org.cncf.model.filepath"]]
        # Distribution 2.8 has no referrers API: the referrers tag lists the formats instead.
        assert httpx.get(f"{registry.url}/v2/mirror/org/model/referrers/{built.index.digest}").status_code == 404
        fallback = httpx.get(
            f"{registry.url}/v2/mirror/org/model/manifests/sha256-{built.index.digest.removeprefix('sha256:')}",
            headers={"Accept": MEDIA_TYPE_INDEX},
        ).json()
        assert [(m["digest"], m["artifactType"]) for m in fallback["manifests"]] == [
            (kit.descriptor.digest, kit.artifact_type),
            (pack.descriptor.digest, pack.artifact_type),
        ]

        again = push_images(store, f"{registry.host}/mirror", insecure=True)
        assert [o.uploaded for o in again] == [0, 0, 0] and again[0].skipped_blobs == 3  # layer and both configs
        fallback_again = httpx.get(
            f"{registry.url}/v2/mirror/org/model/manifests/sha256-{built.index.digest.removeprefix('sha256:')}",
            headers={"Accept": MEDIA_TYPE_INDEX},
        ).json()
        assert fallback_again == fallback  # each format listed once


def test_push_errors_are_clear(store: Store, tmp_path: Path) -> None:
    with (
        cncf_registry(require_tool("docker-registry"), tmp_path / "registry") as registry,
        pytest.raises(ModelyardError, match="has no tags"),
    ):
        push_images(store, registry.host, names=["org/none"], insecure=True)
    with pytest.raises(ModelyardError, match="not a valid OCI repository name"):
        push_images(store, "127.0.0.1:1/Bad_Prefix", insecure=True)
