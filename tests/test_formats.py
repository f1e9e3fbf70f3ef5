"""The other formats of an image (ModelKit, ModelPack) and the virtual blobs they reference, in the store.

Checked with the formats' own code where it exists: the Kitfile parses with the ``kitops`` package's
model, the ModelPack config and manifest pass ``modelpack-client``'s validation (the spec's JSON
schema), and plain tar readers extract the ModelKit layer. Over HTTP with real clients:
``tests/test_formats_clients.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.build.publish import BuiltImage, build_and_publish, published_formats, retag
from pipeline.build.source import files_from_dir
from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci import modelkit, modelpack
from pipeline.oci.estargz import TOC_DIGEST_ANNOTATION
from pipeline.oci.formats import MODELKIT, MODELPACK, ModelFacts, format_tag
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Descriptor, ImageMetadata
from pipeline.oci.references import reachable
from pipeline.oci.referrers import scan_repository
from pipeline.oci.toc import TocChunk, read_toc
from pipeline.oci.virtual import Blobs, ChunkCache, read_chunk
from pipeline.store import LocalBackend, Store
from pipeline.store.gc import collect_garbage
from pipeline.store.store import blob_key
from tests.conftest import require_tool, run, write_tree

MiB = 1024 * 1024
NAME = "org/model"
REVISION = "c" * 40
METADATA = ImageMetadata(
    title="Org/Model", source="https://huggingface.co/Org/Model", revision=REVISION, licenses="apache-2.0"
)
HUB = {"parameters": 22_713_216, "tensor_types": {"F32": 22_712_704, "I64": 512}}


def model_files() -> dict[str, bytes]:
    """A repository of every kind of file, with weights spanning three 4 MiB chunks."""
    return {
        "config.json": b'{"hidden_size": 384}\n',
        "tokenizer.json": b'{"model": {"vocab": {}}}\n',
        "README.md": b"# Org/Model\n",
        "LICENSE": b"Apache License 2.0\n",
        "modeling_org.py": b"import torch\n",
        "model.safetensors": os.urandom(9 * MiB + 17),
        "onnx/model.onnx": os.urandom(1000),
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
        "empty.txt": b"",
    }


@dataclass
class Published:
    store: Store
    built: BuiltImage
    files: dict[str, bytes]
    source: Path

    def document(self, tag: str) -> dict[str, object]:
        descriptor = self.store.get_tag(NAME, tag)
        assert descriptor is not None, tag
        return self.store.read_json_blob(descriptor.digest)

    def layer_path(self) -> Path:
        backend = self.store.backend
        assert isinstance(backend, LocalBackend)
        return backend.path(blob_key(self.built.layer.digest))


@pytest.fixture
def published(tmp_path: Path) -> Published:
    store = Store(LocalBackend(tmp_path / "store"))
    files = model_files()
    source = write_tree(tmp_path / "model", files)
    built = build_and_publish(
        store, files_from_dir(source), name=NAME, tags=["latest", REVISION], metadata=METADATA, catalog=dict(HUB)
    )
    return Published(store, built, files, source)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# tags, subjects, referrers


def test_every_tag_has_its_formats_and_the_catalog_names_them(published: Published) -> None:
    store, index = published.store, published.built.index
    assert store.tags(NAME) == sorted(
        f"{tag}{suffix}" for tag in ("latest", REVISION) for suffix in ("", "-modelkit", "-modelpack")
    )
    formats = store.get_catalog(NAME)["formats"]  # type: ignore[index]
    assert set(formats) == {MODELKIT, MODELPACK}
    for name, artifact_type in ((MODELKIT, modelkit.ARTIFACT_TYPE), (MODELPACK, modelpack.ARTIFACT_TYPE)):
        entry = formats[name]
        assert entry["artifactType"] == artifact_type and entry["mediaType"] == MEDIA_TYPE_MANIFEST
        assert entry["tags"] == [f"latest-{name}", f"{REVISION}-{name}"]
        assert store.get_tag(NAME, f"latest-{name}").digest == entry["digest"]  # type: ignore[union-attr]
        document = published.document(f"latest-{name}")
        assert document["artifactType"] == artifact_type
        assert document["subject"] == {"mediaType": MEDIA_TYPE_INDEX, "digest": index.digest, "size": index.size}
        assert document["annotations"] == METADATA.annotations()


def test_the_index_has_both_formats_as_referrers(published: Published) -> None:
    links = scan_repository(published.store, NAME)
    index = published.built.index.digest
    listed = links.referrers_of(index)
    assert [d.artifact_type for d in listed] == [modelpack.ARTIFACT_TYPE, modelkit.ARTIFACT_TYPE]
    assert [d.digest for d in links.referrers_of(index, modelkit.ARTIFACT_TYPE)] == [
        published.store.get_tag(NAME, "latest-modelkit").digest  # type: ignore[union-attr]
    ]
    assert links.referrers_of(index, "application/x-none") == []
    assert all(d.annotations == METADATA.annotations() for d in listed)
    assert set(published_formats(published.store, NAME, published.built.index)) == {MODELKIT, MODELPACK}


def test_retag_moves_format_tags_with_the_image_tag(published: Published) -> None:
    store, index = published.store, published.built.index
    assert retag(store, NAME, ["latest", REVISION], index) == []
    assert retag(store, NAME, ["stable"], index) == ["stable"]
    assert {t for t in store.tags(NAME) if t.startswith("stable")} == {"stable", "stable-modelkit", "stable-modelpack"}
    assert store.get_tag(NAME, "stable-modelpack") == store.get_tag(NAME, "latest-modelpack")
    for tag in store.tags(NAME):
        if tag.endswith("-modelkit"):
            store.delete_tag(NAME, tag)
    assert retag(store, NAME, ["latest"], index) is None  # an image without its formats is built again


# ModelKit


def test_the_kitfile_parses_with_the_kitops_model(published: Published) -> None:
    from kitops.modelkit.kitfile import Kitfile

    document = published.document("latest-modelkit")
    config = json.loads(published.store.read_blob(document["config"]["digest"]))  # type: ignore[index]
    kitfile = Kitfile(**config)
    assert kitfile.manifestVersion == "1.0.0"
    assert kitfile.package.name == "Org/Model" and kitfile.package.version == REVISION
    assert kitfile.model.path == "." and kitfile.model.name == "Org/Model" and kitfile.model.license == "apache-2.0"
    # What `kit unpack` checks: the Kitfile's layer digest is the manifest's model layer.
    (layer,) = document["layers"]  # type: ignore[misc]
    assert config["model"]["digest"] == layer["digest"] == published.built.layer.digest
    assert config["model"]["diffId"] == published.built.layer.diff_id
    assert config["model"]["format"] == "safetensors"
    assert layer["mediaType"] == modelkit.MEDIA_TYPE_MODEL_LAYER
    assert document["config"]["mediaType"] == modelkit.MEDIA_TYPE_CONFIG  # type: ignore[index]


def test_tar_readers_extract_exactly_the_files_from_the_modelkit_layer(published: Published, tmp_path: Path) -> None:
    blob = published.layer_path()
    with tarfile.open(blob, "r:gz") as archive:  # Python's gzip reads every member, as Go's does
        members = archive.getmembers()
        extracted = {m.name: archive.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    assert extracted == published.files and "stargz.index.json" not in {m.name for m in members}
    out = tmp_path / "gnu"
    out.mkdir()
    run(require_tool("tar"), "-xzf", str(blob), "-C", str(out))
    found = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert found == published.files


# ModelPack


def test_the_modelpack_passes_the_clients_validation_and_the_spec_schema(published: Published) -> None:
    from modelpack_client.client import ModelPackClient
    from modelpack_client.schema import CONFIG_SCHEMA

    document = published.document("latest-modelpack")
    config = json.loads(published.store.read_blob(document["config"]["digest"]))  # type: ignore[index]
    jsonschema.Draft202012Validator(CONFIG_SCHEMA).validate(config)
    ModelPackClient._validate_manifest(document)
    ModelPackClient._validate_config(config, len(document["layers"]))  # type: ignore[arg-type]
    assert config["config"] == {"format": "safetensors", "paramSize": "22.7M", "precision": "float32,int64"}
    assert config["descriptor"] == {
        "createdAt": "1970-01-01T00:00:00Z",
        "name": "Org/Model",
        "sourceURL": "https://huggingface.co/Org/Model",
        "revision": REVISION,
        "licenses": ["apache-2.0"],
    }


def test_every_raw_layer_is_its_file_under_the_catalog_sha256(published: Published) -> None:
    document = published.document("latest-modelpack")
    layers = document["layers"]
    catalog = {f["path"]: f for f in published.store.get_catalog(NAME)["files"]}  # type: ignore[index]
    paths = [layer["annotations"][modelpack.ANNOTATION_FILEPATH] for layer in layers]  # type: ignore[union-attr]
    assert paths[0] == "model.safetensors"  # the weights a runtime loads come first
    assert sorted(paths) == sorted(published.files) and paths[1:] == sorted(paths[1:])
    for layer, path in zip(layers, paths, strict=True):  # type: ignore[call-overload]
        assert layer["digest"] == "sha256:" + catalog[path]["sha256"] == sha256(published.files[path])
        assert layer["size"] == catalog[path]["size"] == len(published.files[path])
        assert layer["annotations"][modelpack.ANNOTATION_TITLE] == path
        metadata = json.loads(layer["annotations"][modelpack.ANNOTATION_FILE_METADATA])
        assert metadata == {
            "name": path.rsplit("/", 1)[-1],
            "mode": 0o644,
            "uid": 0,
            "gid": 0,
            "size": len(published.files[path]),
            "mtime": "1970-01-01T00:00:00Z",
            "typeflag": 0,
        }
    config = json.loads(published.store.read_blob(document["config"]["digest"]))  # type: ignore[index]
    assert config["modelfs"] == {"type": "layers", "diffIds": [layer["digest"] for layer in layers]}
    kinds = {path: layer["mediaType"] for layer, path in zip(layers, paths, strict=True)}  # type: ignore[call-overload]
    assert kinds == {
        "model.safetensors": modelpack.MEDIA_TYPE_WEIGHT,
        "onnx/model.onnx": modelpack.MEDIA_TYPE_WEIGHT,
        "README.md": modelpack.MEDIA_TYPE_DOC,
        "LICENSE": modelpack.MEDIA_TYPE_DOC,
        "modeling_org.py": modelpack.MEDIA_TYPE_CODE,
        "config.json": modelpack.MEDIA_TYPE_WEIGHT_CONFIG,
        "tokenizer.json": modelpack.MEDIA_TYPE_WEIGHT_CONFIG,
        "1_Pooling/config.json": modelpack.MEDIA_TYPE_WEIGHT_CONFIG,
        "empty.txt": modelpack.MEDIA_TYPE_WEIGHT_CONFIG,
    }


def docker_model_runner_view(manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """What Docker Model Runner makes of a ModelPack, by its rules (docker/model-runner, ``pkg/distribution``).

    Its client is not installable here (Docker Desktop, or a Go module outside Debian); these are the
    steps its pull and unpack take: ``checkCompat`` accepts the config media type; ``IsModelPackConfig``
    reads the config as ModelPack when it has ``descriptor.createdAt`` or ``config.paramSize``;
    ``Unpack`` takes the per-layer path (``UnpackFromLayers``) for the ModelPack ``artifactType``, puts
    each layer at its ``org.cncf.model.filepath``, and of the generic weight layers takes a name with
    ``mmproj`` as the projector and the first other one as the model file of ``config.format``.
    """
    assert manifest["config"]["mediaType"] == modelpack.MEDIA_TYPE_CONFIG
    assert "createdAt" in config["descriptor"] or "paramSize" in config["config"]
    assert manifest["artifactType"] == modelpack.ARTIFACT_TYPE
    view = {"format": config["config"].get("format", "")}
    for layer in manifest["layers"]:
        path = layer["annotations"][modelpack.ANNOTATION_FILEPATH]
        if layer["mediaType"] == modelpack.MEDIA_TYPE_WEIGHT:
            role = "mmproj" if "mmproj" in path.rsplit("/", 1)[-1].lower() else view["format"]
            view.setdefault(role, path)
    return view


def test_docker_model_runner_finds_the_model_file_of_gguf_and_safetensors(published: Published, tmp_path: Path) -> None:
    def view(store: Store, name: str) -> dict[str, str]:
        manifest = store.read_json_blob(store.get_tag(name, "latest-modelpack").digest)  # type: ignore[union-attr]
        return docker_model_runner_view(manifest, store.read_json_blob(manifest["config"]["digest"]))  # type: ignore[arg-type, index]

    assert view(published.store, NAME) == {"format": "safetensors", "safetensors": "model.safetensors"}
    gguf = {  # a llama.cpp repository: quantizations side by side, a vision projector, the original weights
        "README.md": b"# GGUF\n",
        "mmproj-model-f16.gguf": b"GGUF" + os.urandom(100),
        "model-Q4_K_M.gguf": b"GGUF" + os.urandom(300),
        "model-Q8_0.gguf": b"GGUF" + os.urandom(500),
        "original/model.safetensors": os.urandom(700),
    }
    store = Store(LocalBackend(tmp_path / "gguf-store"))
    source = files_from_dir(write_tree(tmp_path / "gguf", gguf))
    build_and_publish(store, source, name="org/gguf", tags=["latest"], metadata=ImageMetadata(title="org/gguf"))
    assert view(store, "org/gguf") == {"format": "gguf", "mmproj": "mmproj-model-f16.gguf", "gguf": "model-Q4_K_M.gguf"}


def test_model_facts() -> None:
    assert ModelFacts(parameters=7_241_732_096).param_size == "7.2B"
    assert ModelFacts(parameters=1_000_000).param_size == "1M"
    assert ModelFacts(parameters=512).param_size == "0.5K"
    assert ModelFacts().param_size == "" and ModelFacts().precision == ""
    assert ModelFacts(tensor_types=(("BF16", 10), ("F8_E4M3", 5), ("F4", 1))).precision == "bfloat16,float8_e4m3"
    facts = ModelFacts.of(["a/model-00001-of-00002.gguf", "model.safetensors"], {"parameters": "many"})
    assert facts == ModelFacts("gguf", None, ())


# virtual blobs


def virtual_descriptors(published: Published) -> tuple[Blobs, dict[str, Descriptor]]:
    blobs = Blobs(published.store)
    descriptors = blobs.learn(reachable(published.store, published.store.get_tag(NAME, "latest-modelpack")))  # type: ignore[arg-type]
    raw = {
        d.annotations[modelpack.ANNOTATION_FILEPATH]: d
        for d in descriptors
        if d.media_type in modelpack.RAW_MEDIA_TYPES
    }
    return blobs, raw


def test_virtual_blobs_read_whole_and_at_and_across_chunk_boundaries(published: Published) -> None:
    blobs, raw = virtual_descriptors(published)
    for path, descriptor in raw.items():
        assert blobs.virtual(descriptor.digest) is not None and not published.store.has_blob(descriptor.digest)
        assert b"".join(blobs.read_range(descriptor, 0, descriptor.size)) == published.files[path]
        assert blobs.present(descriptor)
    weights, data = raw["model.safetensors"], published.files["model.safetensors"]
    edges = [
        (0, 1),
        (0, 4 * MiB),
        (4 * MiB - 1, 4 * MiB + 1),
        (4 * MiB, 8 * MiB),
        (3, 9 * MiB + 5),
        (len(data) - 1, len(data)),
        (5, 5),
    ]
    for start, end in edges:
        assert b"".join(blobs.read_range(weights, start, end)) == data[start:end], (start, end)


class CountingBackend(LocalBackend):
    """A local store that records the ranges read from it."""

    ranges: list[tuple[str, int, int]]

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        self.ranges.append((key, start, end))
        return super().read_range(key, start, end)


def test_a_range_reads_only_the_chunks_it_touches(published: Published) -> None:
    backend = CountingBackend(published.store.backend.root)  # type: ignore[attr-defined]
    backend.ranges = []
    store = Store(backend)
    blobs = Blobs(store)
    descriptors = blobs.learn(reachable(store, store.get_tag(NAME, "latest-modelpack")))  # type: ignore[arg-type]
    (weights,) = [d for d in descriptors if d.annotations.get(modelpack.ANNOTATION_FILEPATH) == "model.safetensors"]
    toc = blobs.toc(published.built.image.layer)
    chunks = toc.files["model.safetensors"].chunks
    backend.ranges.clear()
    assert len(b"".join(blobs.read_range(weights, 4 * MiB + 10, 4 * MiB + 20))) == 10
    layer_key = blob_key(published.built.layer.digest)
    assert [r for r in backend.ranges if r[0] == layer_key] == [
        (layer_key, chunks[1].member_offset, chunks[1].member_end)
    ]


def test_a_corrupted_layer_fails_loudly_and_never_gives_wrong_bytes(published: Published) -> None:
    blobs, raw = virtual_descriptors(published)
    weights = raw["model.safetensors"]
    chunks = blobs.toc(published.built.image.layer).files["model.safetensors"].chunks
    layer = published.layer_path()
    data = bytearray(layer.read_bytes())
    data[(chunks[1].member_offset + chunks[1].member_end) // 2] ^= 0xFF
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    received = bytearray()
    with pytest.raises(IntegrityError, match=r"model\.safetensors"):
        for piece in blobs.read_range(weights, 0, weights.size):
            received += piece
    assert received == published.files["model.safetensors"][: 4 * MiB]  # the good chunk, and not a byte more
    assert (
        b"".join(blobs.read_range(weights, 8 * MiB, 8 * MiB + 9)) == published.files["model.safetensors"][8 * MiB :][:9]
    )


def test_a_chunk_that_decompresses_but_differs_is_refused() -> None:
    member = subprocess.run(["gzip", "-c", "-n"], input=b"not the chunk", capture_output=True, check=True).stdout
    chunk = TocChunk(0, 13, 0, len(member), 0, sha256(b"the true chunk"[:13]))
    with pytest.raises(IntegrityError, match="does not match its chunkDigest"):
        read_chunk(lambda start, end: iter([member[start:end]]), chunk, "test")


def test_a_toc_that_is_not_the_one_the_descriptor_names_is_refused(published: Published) -> None:
    layer = published.built.layer
    blob = published.layer_path().read_bytes()

    def read(start: int, end: int) -> Iterator[bytes]:
        yield blob[start:end]

    assert read_toc(read, layer.size, layer.toc_digest).digest == layer.toc_digest
    with pytest.raises(IntegrityError, match="but the descriptor says"):
        read_toc(read, layer.size, sha256(b"another toc"))
    with pytest.raises(IntegrityError, match="no eStargz footer"):
        read_toc(read, layer.size - 1, layer.toc_digest)


def test_gc_keeps_a_layer_while_a_format_needs_it(published: Published) -> None:
    store = published.store
    for tag in ("latest", REVISION, f"latest-{MODELKIT}", f"{REVISION}-{MODELKIT}", f"{REVISION}-{MODELPACK}"):
        store.delete_tag(NAME, tag)
    store.backend.delete(f"catalog/{NAME}.json")
    report = collect_garbage(store, grace=0)
    assert not any(info.key == blob_key(published.built.layer.digest) for info in report.removed)
    blobs, raw = virtual_descriptors(published)
    assert b"".join(blobs.read_range(raw["config.json"], 0, raw["config.json"].size)) == published.files["config.json"]
    store.delete_tag(NAME, f"latest-{MODELPACK}")
    collect_garbage(store, grace=0)
    assert not store.has_blob(published.built.layer.digest)
    with pytest.raises(NotFoundError):
        list(blobs.read_range(raw["config.json"], 0, 1))
    assert not blobs.present(raw["config.json"])


def test_format_tags_are_in_the_tag_grammar() -> None:
    from pipeline.names import is_tag

    assert is_tag(format_tag(REVISION, MODELPACK)) and is_tag(format_tag("v" * 118, MODELPACK))
    assert not is_tag(format_tag("v" * 119, MODELPACK))


def test_a_stored_blob_is_never_shadowed_by_a_virtual_one(published: Published) -> None:
    blobs, raw = virtual_descriptors(published)
    config = raw["config.json"]
    published.store.put_blob(published.files["config.json"])  # the same bytes, now also stored
    assert blobs.virtual(config.digest) is None
    assert b"".join(blobs.read_range(config, 0, config.size)) == published.files["config.json"]
    assert TOC_DIGEST_ANNOTATION in published.built.image.layer.annotations


def test_the_chunk_cache_keeps_checked_chunks_most_recently_used_first() -> None:
    cache = ChunkCache(max_bytes=10)
    reads: list[bytes] = []

    def reading(data: bytes) -> Callable[[], bytes]:
        def read() -> bytes:
            reads.append(data)
            return data

        return read

    def chunk(member: int) -> TocChunk:
        return TocChunk(0, 4, member, member + 1, 0, sha256(b""))

    assert cache.load("layer", chunk(1), reading(b"aaaa")) == b"aaaa"
    assert cache.load("layer", chunk(1), reading(b"never")) == b"aaaa"  # a hit reads nothing
    cache.load("layer", chunk(2), reading(b"bbbb"))
    cache.load("layer", chunk(1), reading(b"never"))  # 1 is now the most recently used
    cache.load("layer", chunk(3), reading(b"cccc"))  # past 10 bytes: 2 goes
    assert cache.size == 8 and reads == [b"aaaa", b"bbbb", b"cccc"]
    assert cache.load("layer", chunk(2), reading(b"bbbb")) == b"bbbb" and reads[-1] == b"bbbb"
    assert cache.load("other", chunk(1), reading(b"dddd")) == b"dddd"  # keyed by layer too
    assert cache.load("layer", chunk(9), reading(b"x" * 11)) == b"x" * 11 and cache.size <= 10  # too big to keep

    def corrupt() -> bytes:
        raise IntegrityError("bad chunk")

    with pytest.raises(IntegrityError):
        cache.load("layer", chunk(7), corrupt)
    assert cache.load("layer", chunk(7), reading(b"good")) == b"good"  # a failure is never kept


def test_a_walk_counts_virtual_blobs_present_while_their_layer_is(published: Published) -> None:
    from pipeline.oci.references import missing

    store = published.store
    for tag in store.tags(NAME):
        assert missing(store, store.get_tag(NAME, tag)) == [], tag  # type: ignore[arg-type]
    store.backend.delete(blob_key(published.built.layer.digest))
    lost = missing(store, store.get_tag(NAME, "latest-modelpack"))  # type: ignore[arg-type]
    assert {d.digest for d in lost} == {published.built.layer.digest} | {
        sha256(data) for data in published.files.values()
    }
