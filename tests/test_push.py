"""Pushing to another registry (Debian's docker-registry): every digest preserved, nothing sent twice."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.errors import ModelyardError
from pipeline.oci.image import MEDIA_TYPE_INDEX, ImageMetadata
from pipeline.remote.push import push_images
from pipeline.store import LocalBackend, Store
from tests.cncf_registry import cncf_registry
from tests.conftest import require_tool, run, with_formats
from tests.registry_fixtures import running_registry

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
        with running_registry(store.backend.url(), tmp_path / "serve") as source:  # skopeo on both sides
            for tag in with_formats(["latest", "a" * 40]):
                ours, theirs = (
                    run(skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{host}/{path}:{tag}").stdout
                    for host, path in ((source.host, "org/model"), (registry.host, "mirror/org/model"))
                )
                assert ours == theirs, tag
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


def _published_store(tmp_path: Path, tree: MakeTree) -> Path:
    root = tmp_path / "store"
    build_and_publish(
        Store(LocalBackend(root)),
        files_from_dir(tree({"config.json": b"{}"})),
        name="org/model",
        tags=["latest"],
        metadata=ImageMetadata(title="org/model"),
    )
    return root


def _push(store: Path, destination: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline", "push", "--to", destination, "--insecure", "--store", str(store)]
    # The bound of the test: oras-py alone used to retry for 132 s before a raw urllib3 line.
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def test_push_to_a_registry_that_is_down_fails_in_seconds(tmp_path: Path, tree: MakeTree) -> None:
    store = _published_store(tmp_path, tree)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but not listening: every connection is refused
        host = f"127.0.0.1:{closed.getsockname()[1]}"
        result = _push(store, f"{host}/mirror")
    assert result.returncode == 1
    *retries, error = [line for line in result.stderr.splitlines() if line.strip()]
    head = f"HEAD http://{host}/v2/mirror/org/model/blobs/sha256:"
    assert [line.startswith(f"push: {head}") for line in retries] == [True, True]
    assert [line.split(": connection refused; ")[1] for line in retries] == [
        "retry 1 of 2 in 0.5 s",
        "retry 2 of 2 in 2.0 s",
    ]
    assert error.startswith(
        f"error: cannot push to the registry at http://{host}: connection refused (3 attempts; {head}"
    )


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_HEAD

    def log_message(self, *args: object) -> None: ...


def test_push_to_a_registry_that_answers_503_retries_a_few_times(tmp_path: Path, tree: MakeTree) -> None:
    store = _published_store(tmp_path, tree)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        result = _push(store, host)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    *retries, error = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(retries) == 4 and all(": HTTP 503; retry " in line for line in retries)  # the HEAD, then the POST
    assert error == f"error: {host}/org/model: the registry refused to start an upload (503)"
