"""Every format of a model through a real `modelyard serve`, with real clients, over both stores.

modelpack-client pulls and validates the ModelPack; oras-py fetches and pulls; skopeo copies every
format's manifest with identical digests; the virtual blobs answer whole, ranged and multi-range
requests; the referrers API lists the formats; podman mounts the served image as a volume, the
mechanism of Kubernetes image volumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci import modelkit, modelpack
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST
from pipeline.oci.layout import export_oci_layout
from pipeline.oci.virtual import Blobs
from pipeline.store import LocalBackend, Store, open_store
from pipeline.store.store import blob_key
from tests.cncf_registry import cncf_registry
from tests.conftest import require_tool, run, write_tree
from tests.podman import podman_sandbox
from tests.registry_fixtures import RunningRegistry, moto_s3, running_registry
from tests.test_formats import METADATA, NAME, REVISION, MiB, model_files
from tests.test_worker_app import multipart_parts

OTHER = "org/other"


@dataclass
class Served:
    backend: str
    store: Store
    registry: RunningRegistry
    built: BuiltImage
    files: dict[str, bytes]

    def url(self, path: str, name: str = NAME) -> str:
        return f"{self.registry.url}/v2/{name}/{path}"

    def raw_layers(self) -> dict[str, dict[str, object]]:
        """The ModelPack's layers by file path."""
        (pack,) = [f for f in self.built.formats if f.name == "modelpack"]
        layers = json.loads(pack.manifest.data)["layers"]
        return {layer["annotations"][modelpack.ANNOTATION_FILEPATH]: layer for layer in layers}


@pytest.fixture(scope="module", params=["local", "s3"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp(f"formats-{request.param}")
    with moto_s3() if request.param == "s3" else contextlib.nullcontext() as s3:
        location = "s3://models/formats" if s3 is not None else str(workdir / "store")
        store = open_store(location)
        files = model_files()
        source = write_tree(workdir / "model", files)
        built = build_and_publish(
            store, files_from_dir(source), name=NAME, tags=["latest", REVISION], metadata=METADATA
        )
        other = write_tree(workdir / "other", {"config.json": b'{"other": true}\n'})
        build_and_publish(store, files_from_dir(other), name=OTHER, tags=["latest"], metadata=METADATA)
        with running_registry(location, workdir / "server", env=s3.env if s3 is not None else {}) as registry:
            yield Served(request.param, store, registry, built, files)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_modelpack_client_pulls_every_file_byte_identical(served: Served, tmp_path: Path) -> None:
    from modelpack_client import ModelPackClient

    pulled = ModelPackClient(insecure=True).pull(f"{served.registry.host}/{NAME}:latest-modelpack", tmp_path / "out")
    got = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in pulled.files}
    assert got == served.files
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in pulled.files)
    assert pulled.config["config"]["format"] == "safetensors"


def test_oras_fetches_and_pulls_every_format(served: Served, tmp_path: Path) -> None:
    import oras.client

    client = oras.client.OrasClient(hostname=served.registry.host, insecure=True)
    target = f"{served.registry.host}/{NAME}"
    for format_manifest in served.built.formats:
        manifest = client.get_manifest(f"{target}:latest-{format_manifest.name}")
        assert manifest == json.loads(format_manifest.manifest.data)
        for blob in (manifest["config"], *manifest["layers"]):
            response = client.get_blob(target, blob["digest"])
            assert response.status_code == 200 and sha256(response.content) == blob["digest"]
    files = client.pull(target=f"{target}:latest-modelpack", outdir=str(tmp_path / "oras"))
    assert {Path(f).relative_to(tmp_path / "oras").as_posix(): Path(f).read_bytes() for f in files} == served.files


def test_skopeo_copies_every_format_with_identical_digests(served: Served, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    layout = tmp_path / "layout"
    expected = {"latest": served.built.index.digest} | {
        f"latest-{f.name}": f.descriptor.digest for f in served.built.formats
    }
    for tag in expected:
        source = f"docker://{served.registry.host}/{NAME}:{tag}"
        run(skopeo, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", source, f"oci:{layout}:{tag}")
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    assert {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in entries} == expected
    blobs = layout / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert sha256(blob.read_bytes()) == "sha256:" + blob.name
    for layer in served.raw_layers().values():  # every virtual blob, materialized by the copy
        assert (blobs / str(layer["digest"]).removeprefix("sha256:")).exists()


def test_oras_copies_every_format_with_identical_digests(served: Served, tmp_path: Path) -> None:
    """oras-go's Copy (``oras copy``) from modelyard to Debian's docker-registry: the same manifests and blobs."""
    oras_copy, skopeo = require_tool("oras-copy"), require_tool("skopeo")
    expected = {"latest": served.built.image.index} | {f"latest-{f.name}": f.manifest for f in served.built.formats}
    with cncf_registry(require_tool("docker-registry"), tmp_path / "registry") as registry:
        # containerd 1.6's pusher (under oras-go 1.1) panics on a zero-byte blob (its pushWriter.Commit writes
        # to a pipe that only a Write opens): the copy finds empty.txt's blob already there instead.
        empty = sha256(b"")
        started = httpx.post(f"{registry.url}/v2/copy/{NAME}/blobs/uploads/")
        location = httpx.URL(registry.url).join(started.headers["location"])
        assert httpx.put(location.copy_add_param("digest", empty), content=b"").status_code == 201
        for tag, manifest in expected.items():
            source, target = f"{served.registry.host}/{NAME}:{tag}", f"{registry.host}/copy/{NAME}:{tag}"
            assert run(oras_copy, source, target).stdout.strip() == manifest.descriptor.digest, tag
            raw = run(skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{target}").stdout
            assert raw.encode() == manifest.data, tag
        blobs = [layer["digest"] for layer in served.raw_layers().values()]
        blobs += [served.built.layer.digest] + [f.config.descriptor.digest for f in served.built.formats]
        for digest in blobs:  # the virtual blobs too, now stored there under their digests
            copied = httpx.get(f"{registry.url}/v2/copy/{NAME}/blobs/{digest}", follow_redirects=True)
            assert copied.status_code == 200 and sha256(copied.content) == digest


def test_virtual_blobs_answer_whole_ranged_multi_range_and_head(served: Served) -> None:
    layers = served.raw_layers()
    for path, layer in layers.items():
        url = served.url(f"blobs/{layer['digest']}")
        whole = httpx.get(url)
        assert whole.status_code == 200 and whole.content == served.files[path], path
        assert whole.headers["content-length"] == str(layer["size"])
        assert whole.headers["docker-content-digest"] == layer["digest"]
        head = httpx.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(layer["size"]) and head.content == b""
    data = served.files["model.safetensors"]
    url = served.url(f"blobs/{layers['model.safetensors']['digest']}")
    chunk = 4 * MiB
    for first, last in ((0, chunk - 1), (chunk - 1, chunk), (chunk, 2 * chunk - 1), (5, len(data) - 1)):
        ranged = httpx.get(url, headers={"Range": f"bytes={first}-{last}"})
        assert ranged.status_code == 206 and ranged.content == data[first : last + 1], (first, last)
        assert ranged.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert httpx.get(url, headers={"Range": "bytes=-7"}).content == data[-7:]
    multi = httpx.get(url, headers={"Range": f"bytes=0-9,{chunk - 3}-{chunk + 2},{len(data) - 4}-"})
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    parts = multipart_parts(multi.headers["content-type"], multi.content)
    assert parts == [
        (f"bytes 0-9/{len(data)}", data[:10]),
        (f"bytes {chunk - 3}-{chunk + 2}/{len(data)}", data[chunk - 3 : chunk + 3]),
        (f"bytes {len(data) - 4}-{len(data) - 1}/{len(data)}", data[-4:]),
    ]
    assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert httpx.get(url, headers={"If-None-Match": f'"{layers["model.safetensors"]["digest"]}"'}).status_code == 304


def test_a_virtual_blob_is_served_only_where_a_manifest_references_it(served: Served) -> None:
    digest = served.raw_layers()["model.safetensors"]["digest"]
    elsewhere = httpx.get(served.url(f"blobs/{digest}", name=OTHER))
    assert elsewhere.status_code == 404 and elsewhere.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    nobody = httpx.get(served.url(f"blobs/{sha256(b'no manifest names this')}"))
    assert nobody.status_code == 404


def test_referrers_list_every_format_of_the_image(served: Served) -> None:
    index = served.built.index.digest
    listed = httpx.get(served.url(f"referrers/{index}"))
    assert listed.status_code == 200 and listed.headers["content-type"] == MEDIA_TYPE_INDEX
    body = listed.json()
    assert body["mediaType"] == MEDIA_TYPE_INDEX and body["schemaVersion"] == 2
    by_type = {m["artifactType"]: m for m in body["manifests"]}
    assert set(by_type) == {modelkit.ARTIFACT_TYPE, modelpack.ARTIFACT_TYPE}
    for format_manifest in served.built.formats:
        entry = by_type[format_manifest.artifact_type]
        assert entry["digest"] == format_manifest.descriptor.digest and entry["mediaType"] == MEDIA_TYPE_MANIFEST
        assert entry["size"] == format_manifest.descriptor.size and entry["annotations"] == METADATA.annotations()
    filtered = httpx.get(served.url(f"referrers/{index}"), params={"artifactType": modelpack.ARTIFACT_TYPE})
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert [m["artifactType"] for m in filtered.json()["manifests"]] == [modelpack.ARTIFACT_TYPE]
    kit = served.built.formats[0].descriptor.digest
    assert httpx.get(served.url(f"referrers/{kit}")).json()["manifests"] == []


@pytest.mark.parametrize("served", ["local"], indirect=True)
def test_export_of_a_format_tag_materializes_its_virtual_blobs(served: Served, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    export_oci_layout(served.store, NAME, "latest-modelpack", tmp_path / "oci")
    raw = run(skopeo, "inspect", "--raw", f"oci:{tmp_path / 'oci'}:latest-modelpack").stdout
    assert sha256(raw.encode()) == served.built.formats[1].descriptor.digest
    for path, layer in served.raw_layers().items():
        assert (
            tmp_path / "oci/blobs/sha256" / str(layer["digest"]).removeprefix("sha256:")
        ).read_bytes() == served.files[path]


def test_a_corrupted_layer_fails_loudly_over_http(tmp_path: Path) -> None:
    store = Store(LocalBackend(tmp_path / "store"))
    files = {"config.json": b"{}\n", "model.safetensors": bytes(range(256)) * (40 * 1024)}  # 10 MiB: 3 chunks
    built = build_and_publish(
        store, files_from_dir(write_tree(tmp_path / "m", files)), name=NAME, tags=["latest"], metadata=METADATA
    )
    blobs = Blobs(store)
    chunks = blobs.toc(built.image.layer).files["model.safetensors"].chunks
    layer_path = store.backend.path(blob_key(built.layer.digest))  # type: ignore[attr-defined]
    data = bytearray(layer_path.read_bytes())
    data[(chunks[1].member_offset + chunks[1].member_end) // 2] ^= 0x55
    layer_path.write_bytes(bytes(data))
    digest = sha256(files["model.safetensors"])
    with running_registry(str(tmp_path / "store"), tmp_path / "server") as registry:
        url = f"{registry.url}/v2/{NAME}/blobs/{digest}"
        received = bytearray()
        with pytest.raises(httpx.HTTPError), httpx.stream("GET", url) as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
        assert received == files["model.safetensors"][: len(received)] and len(received) <= 4 * MiB
        broken = httpx.get(url, headers={"Range": f"bytes={4 * MiB}-{4 * MiB + 9}"})
        assert broken.status_code == 500 and broken.json()["errors"][0]["code"] == "UNKNOWN"
        fine = httpx.get(url, headers={"Range": "bytes=0-9"})  # chunks are independent: the first is intact
        assert fine.status_code == 206 and fine.content == files["model.safetensors"][:10]
        logs = registry.logs()
    assert f"virtual blob {digest}" in logs and "corrupt" in logs


@pytest.mark.slow
@pytest.mark.parametrize("served", ["local"], indirect=True)
def test_podman_mounts_the_served_image_as_a_volume(served: Served, tmp_path: Path) -> None:
    """``podman run --mount type=image``: what a Pod's ``volumes[].image.reference`` does in Kubernetes."""
    busybox = Path(require_tool("busybox"))
    context = write_tree(tmp_path / "context", {"bin/busybox": busybox.read_bytes()})
    (context / "bin/busybox").chmod(0o755)
    (context / "Containerfile").write_text('FROM scratch\nCOPY bin/busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n')
    image = f"{served.registry.host}/{NAME}:latest"
    paths = sorted(served.files)
    script = (
        "sha256sum " + " ".join(f"'/model/{p}'" for p in paths) + "; touch /model/x 2>/dev/null && echo WRITABLE; true"
    )
    with podman_sandbox(tmp_path / "storage") as podman:
        podman.build("-q", "-t", "localhost/busybox", str(context))
        # Like the kubelet, pull the volume's image first; then mount it read-only into a container.
        podman("pull", "--tls-verify=false", "-q", image)
        result = podman(
            "run",
            "--rm",
            "--network",
            "none",
            # podman's default limits raise the process's, which needs CAP_SYS_RESOURCE; lowering never does.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--mount",
            f"type=image,source={image},destination=/model",
            "localhost/busybox",
            "sh",
            "-c",
            script,
        )
    sums = {line.split("  ", 1)[1].removeprefix("/model/"): line.split()[0] for line in result.stdout.splitlines()}
    assert sums == {p: hashlib.sha256(served.files[p]).hexdigest() for p in paths}
    assert "WRITABLE" not in result.stdout  # mounted read-only, as Kubernetes mounts image volumes
