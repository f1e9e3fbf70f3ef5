"""Golden digests: the exact bytes of format 2 for a fixed fixture, on this CPU and on emulated ones.

If this fails, the bytes of every image changed: the tar rules, the TOC, the compressor (its version,
level or store rule), the chunk size, or the image JSON. If that was not the intent, it is a bug. If it
was, bump FORMAT_VERSION in pipeline/oci/format.py and update these digests in the same commit.

The same digests must come out of every CPU a build may run on. The fixture (tests/golden.py) is built
under qemu-user on x86-64 CPU models without AVX2 (Nehalem), with AVX2 (Haswell) and a server model
(Icelake-Server; qemu's emulator masks its AVX-512, which the native run covers on a CPU that has it),
and on aarch64 CPU models, with a Debian arm64 Python and the pinned arm64 wheels (tests/arm64_python.py).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest

from pipeline.oci.format import FORMAT_VERSION
from pipeline.store import LocalBackend, Store, blob_key
from tests import arm64_python
from tests.conftest import ROOT, require_tool, run, verify_with_reference
from tests.golden import FIXTURE, METADATA, build_fixture, digests

GOLDEN = {
    "layer": "sha256:0c8e6ea642b7d3c01a35961aa8e01e9f268ce732dcfb4ec131b990d1a7725d4d",
    "diff_id": "sha256:373c5adae540bdc716ba816d3fad7c97e8b1bc5edd9bd4d0397a9fc28470f6e1",
    "toc": "sha256:8bbc993b89a5868bf50c18946fccb1720ee16763e18a7011a0f6bb6bdee2a182",
    "index": "sha256:987da3414f2f78e42b61c2ad874e36071fa1d756e56b4e359ad7024a58fb9c1c",
    "manifests": [
        "sha256:c365bf056f03c4974f5efb3bd6e17912c9b0b3e01e68fee754df835079d3d6e6",
        "sha256:7def6a2de3fa2d88fd5c6fc77e6e66a449139e0dc5793b29aa1c581920a5de94",
    ],
    "configs": [
        "sha256:d05255ea17a1cab205ba64bfc2390e832f63f195d53d6b3e1179882a74e37cae",
        "sha256:a7332d42c4a6761155a0c6bb3abd52baf2b6e5f98bcfae4cf876819cf703f9a9",
    ],
}

# The other formats of the fixture's image (ModelKit, ModelPack): their manifests name the index as
# subject and the ModelKit's Kitfile names the layer, so any change above changes them too.
GOLDEN_FORMATS = {
    "modelkit": "sha256:35d70e0182e830d49b0f1383acd4973ef32f5204db1526ff7f514e2394827782",
    "modelkit config": "sha256:68319475bb93f7fdf22684c526198b308a56fdd06df5690720cdd906e1a22383",
    "modelpack": "sha256:6a4fd80a5c3653711824a94f33e59b265e383d6efdbac46e2bc3197fab847469",
    "modelpack config": "sha256:8bdfae04ed9ecc3dcfa2027089de5ddbd539b218d2cfc151300d1acfb638069e",
}


X86_CPUS = ["Nehalem", "Haswell", "Icelake-Server"]
ARM64_CPUS = ["cortex-a72", "neoverse-n1", "a64fx"]


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


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates other x86-64 CPUs")
@pytest.mark.parametrize("cpu", X86_CPUS)
def test_the_same_digests_on_other_x86_cpus(tmp_path: Path, cpu: str) -> None:
    qemu = require_tool("qemu-x86_64")
    result = run(qemu, "-cpu", cpu, sys.executable, "-m", "tests.golden", str(tmp_path), cwd=ROOT)
    assert json.loads(result.stdout) == GOLDEN


@pytest.fixture(scope="session")
def arm64() -> arm64_python.Arm64Python:
    require_tool("debootstrap")
    return arm64_python.ensure()


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ARM64_CPUS)
def test_the_same_digests_on_arm64(tmp_path: Path, cpu: str, arm64: arm64_python.Arm64Python) -> None:
    qemu = require_tool("qemu-aarch64")
    result = run(*arm64.command(qemu, cpu, "-m", "tests.golden", str(tmp_path)), cwd=ROOT, env=arm64.env())
    assert json.loads(result.stdout) == GOLDEN


@pytest.mark.parametrize("download", ["stream", "cache"])
def test_the_same_digests_built_from_the_hub(tmp_path: Path, download: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture served by the fixture hub (LFS through its CDN): streamed or downloaded first, the same bytes."""
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
