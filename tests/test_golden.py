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
from pipeline.store import blob_key
from tests import arm64_python
from tests.conftest import ROOT, require_tool, run, verify_with_reference
from tests.golden import build_fixture, digests

GOLDEN = {
    "layer": "sha256:816609b96230f3e782bc7b2314df14809fe7619f2a4479bf700369fa01c93e3c",
    "diff_id": "sha256:bd405d5bce601ea621a00a1d167ff8a48fccf10f6340e5bb62a07955425fef2c",
    "toc": "sha256:762d61ef3d8721235803e07f40ae4723d1cfbc72e21a922534dd599ac6406fc8",
    "index": "sha256:2416e7ead28aa05214bd6fa1d8bcb819a86ff9917fc499439a4b40631405a3ee",
    "manifests": [
        "sha256:4427cf0dee745c9100be284e0580977cd3eb7feceb5a6fa22105cd362ddf22c9",
        "sha256:8629f51591cdfe50be5b6c94154ed848f667450b832aeb1bf66b4bcac073bfa2",
    ],
    "configs": [
        "sha256:8f103615e226374f9f77d5a7c7c4135c6e711723b1dcde9e633ac2773854bec0",
        "sha256:db91df28c7ee3cc83074b16e34f8cc2759513ecab84124a19c4b407edbf52677",
    ],
}

X86_CPUS = ["Nehalem", "Haswell", "Icelake-Server"]
ARM64_CPUS = ["cortex-a72", "neoverse-n1", "a64fx"]


def test_format_2_digests_are_pinned(tmp_path: Path) -> None:
    assert FORMAT_VERSION == "2"
    built = build_fixture(tmp_path, threads=2)
    assert digests(built) == GOLDEN
    verify_with_reference(tmp_path / "store" / blob_key(built.layer.digest), built.layer)


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
