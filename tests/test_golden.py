"""Golden digests: the exact bytes of format 2 for a fixed fixture.

If this fails, the bytes of every image changed: the tar rules, the TOC, the compressor (its version or
level), the chunk size, or the image JSON. If that was not the intent, it is a bug. If it was, bump
FORMAT_VERSION in pipeline/oci/format.py and update these digests in the same commit.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest

from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci.format import FORMAT_VERSION
from pipeline.oci.image import ImageMetadata
from pipeline.store import LocalBackend, Store, blob_key
from tests.conftest import ROOT, require_tool, run, verify_with_reference, write_tree


def pseudo_random(size: int, seed: bytes) -> bytes:
    """Deterministic bytes, the same on every machine and Python version."""
    blocks = (hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


FIXTURE = {
    "config.json": b'{"architectures": ["BertModel"], "hidden_size": 384}\n',
    "1_Pooling/config.json": b'{"word_embedding_dimension": 384}\n',
    "model.safetensors": pseudo_random(5 * 1024 * 1024 + 3, b"weights"),
    "tokenizer.json": b'{"version": "1.0"}\n' * 1000,
    "empty.txt": b"",
    "deep/a/b/c/" + "long-name-" * 12 + ".txt": b"long\n",
    "données/été.txt": "ünïcödé\n".encode(),
}

METADATA = ImageMetadata(
    title="golden/fixture",
    source="https://huggingface.co/golden/fixture",
    revision="0123456789" * 4,
    licenses="mit",
)

GOLDEN = {
    "layer": "sha256:9a656a301d8465bef4d91b89e23019408d4791e954109eac854a217a471aa2e1",
    "diff_id": "sha256:83f688c84308940e779369bf5b7505e1d565d1f0ff678bc2e6ff83ed8d3f67eb",
    "toc": "sha256:f28aa1dfea38e5879653308af115f1de8acbc9e37295ab1f2a1f597674a97819",
    "index": "sha256:906c817587622302fccc4ea22341c120381bc47557f6d3f1cff42799e7b7148a",
    "manifests": [
        "sha256:3bf6870a78c5ba7fc5a62ea995d81305e547dff540936d3f4c714a268647a106",
        "sha256:bd6326ba79cabf59ce0eb76ea9b397cdc4900215f542c4c5589c2ffa521eecc1",
    ],
    "configs": [
        "sha256:d2622708ccd6b8cf6f8203a24d134798865c0573d4ad0e07ad40406f0418130c",
        "sha256:85955242283d4c793d6efc5ae019f010a103dbd4651beb6835f20dc0c023783f",
    ],
}


# The other formats of the fixture's image (ModelKit, ModelPack): their manifests name the index as
# subject and the ModelKit's Kitfile names the layer, so any change above changes them too.
GOLDEN_FORMATS = {
    "modelkit": "sha256:7dbf77f0a185f251a344a245d0932b79166904d808772e49bca1a0aba5a81d03",
    "modelkit config": "sha256:05d9b2dc504571e0e15445f9a87b03b3a82dec8fb8e5d8541ba1c65a8fe3a600",
    "modelpack": "sha256:5165c413c0e886120ee6ed07c5a5ab08f12660246e5efa182c37b3214a8fabf4",
    "modelpack config": "sha256:f86293752f4c8b35e7fed496d26d56c33bed1ec6323e2a2fdd11f9fe4cedc24e",
}


def build_fixture(workdir: Path, threads: int) -> BuiltImage:
    store = Store(LocalBackend(workdir / "store"))
    return build_and_publish(
        store,
        files_from_dir(write_tree(workdir / "fixture", FIXTURE)),
        name="golden/fixture",
        tags=["latest"],
        metadata=METADATA,
        threads=threads,
    )


def digests(built: BuiltImage) -> dict[str, object]:
    return {
        "layer": built.layer.digest,
        "diff_id": built.layer.diff_id,
        "toc": built.layer.toc_digest,
        "index": built.index.digest,
        "manifests": [m.descriptor.digest for m in built.image.manifests],
        "configs": [c.descriptor.digest for c in built.image.configs],
    }


def test_format_2_digests_are_pinned(tmp_path: Path) -> None:
    assert FORMAT_VERSION == "2"
    built = build_fixture(tmp_path, threads=2)
    assert digests(built) == GOLDEN
    verify_with_reference(tmp_path / "store" / blob_key(built.layer.digest), built.layer)


def test_the_format_manifests_are_pinned(tmp_path: Path) -> None:
    built = build_fixture(tmp_path, threads=2)
    pinned = {f.name: f.descriptor.digest for f in built.formats}
    pinned |= {f"{f.name} config": f.config.descriptor.digest for f in built.formats}
    assert pinned == GOLDEN_FORMATS


@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates older x86-64 CPUs")
@pytest.mark.parametrize("cpu", ["Nehalem", "Haswell"])
def test_the_same_digests_on_other_cpus(tmp_path: Path, cpu: str) -> None:
    """ISA-L picks its code by CPU features (SSE, AVX2, AVX-512): all must deflate identically."""
    qemu = require_tool("qemu-x86_64")
    script = (
        "import json, sys; from pathlib import Path; from tests.test_golden import build_fixture, digests; "
        "print(json.dumps(digests(build_fixture(Path(sys.argv[1]), threads=1))))"
    )
    result = run(qemu, "-cpu", cpu, sys.executable, "-c", script, str(tmp_path), cwd=ROOT)
    assert json.loads(result.stdout) == GOLDEN


@pytest.mark.parametrize("download", ["stream", "cache"])
def test_the_same_digests_built_from_the_hub(tmp_path: Path, download: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture served by the fixture hub (LFS through its CDN): streamed or downloaded first, the same bytes."""
    # Imported here: the emulated-CPU runs import this module and need only the layer writer.
    from pipeline.build.batch import BatchOptions, build_models
    from pipeline.hub.client import HubClient
    from pipeline.hub.stream import StreamOptions
    from pipeline.models.file import ModelSpec
    from tests.fixture_hub import FixtureHub, FixtureRepo

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = FixtureRepo(METADATA.title, METADATA.revision, FIXTURE, card_data={"license": METADATA.licenses})
    store = Store(LocalBackend(tmp_path / "store"))
    with FixtureHub([repo], cdn=True) as hub:
        options = BatchOptions(tmp_path / "cache", download=download, stream=StreamOptions(segment_size=1024 * 1024))  # type: ignore[arg-type]
        (outcome,) = build_models([ModelSpec(METADATA.title, METADATA.revision)], store, HubClient(hub.url), options)
    assert (outcome.status, outcome.detail) == ("built", GOLDEN["index"])
    record = store.get_catalog(METADATA.title)
    assert record is not None
    assert (record["layer_digest"], record["diff_id"], record["toc_digest"]) == (
        GOLDEN["layer"],
        GOLDEN["diff_id"],
        GOLDEN["toc"],
    )
