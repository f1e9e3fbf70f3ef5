"""Shared fixtures: real tools on this machine, model trees on disk, and stores.

A test that needs a missing tool is skipped with the reason, except under MODELYARD_REQUIRE_TOOLS=1
(set by .ci/run), where the missing tool is a failure: in CI nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.oci.estargz import LayerResult
from pipeline.store import LocalBackend, Store

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """The path of a command-line tool, or skip (fail in CI) when it is not installed."""
    local = ROOT / ".tools" / "bin" / name
    path = str(local) if local.exists() else shutil.which(name)
    if path is None:
        message = f"{name} is not installed (./dev setup installs it)"
        if os.environ.get("MODELYARD_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def with_formats(tags: list[str]) -> list[str]:
    """The tags a publish of ``tags`` writes, sorted: each image tag and its ``-modelkit``, ``-modelpack``."""
    return sorted(f"{tag}{suffix}" for tag in tags for suffix in ("", "-modelkit", "-modelpack"))


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Create files (with their parent directories) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def reference_verify(blob: Path, *expected: str) -> tuple[int, dict[str, Any]]:
    """Run ``estargz-ref verify BLOB [--toc-digest D] [--diff-id D]`` (tests/go/estargz-ref: the reference
    eStargz reader's thorough check); its exit status and JSON report."""
    tool = require_tool("estargz-ref")
    result = subprocess.run([tool, "verify", str(blob), *expected], capture_output=True, text=True)
    return result.returncode, json.loads(result.stdout)


def reference_build(source_tar: Path, blob: Path, *options: str) -> LayerResult:
    """Build ``blob`` from a tar with the reference eStargz writer (``estargz-ref build``); describe it."""
    tool = require_tool("estargz-ref")
    built = json.loads(run(tool, "build", str(source_tar), str(blob), *options).stdout)
    status, report = reference_verify(blob, "--toc-digest", built["toc_digest"], "--diff-id", built["diff_id"])
    assert status == 0, report["errors"]
    size = int(report["uncompressed_tar_bytes"])
    return LayerResult(built["blob_digest"], built["output_bytes"], built["diff_id"], built["toc_digest"], size, ())


def verify_with_reference(blob: Path, layer: LayerResult) -> dict[str, Any]:
    """Check a layer blob with the reference eStargz reader, against the layer's digests; its report."""
    status, report = reference_verify(blob, "--toc-digest", layer.toc_digest, "--diff-id", layer.diff_id)
    assert status == 0 and report["ok"], f"estargz-ref verify failed: {report.get('errors')}"
    return report


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(LocalBackend(tmp_path / "store"))


@pytest.fixture
def tree(tmp_path: Path) -> Callable[[Mapping[str, bytes]], Path]:
    """Make a model directory from a {path: bytes} mapping."""
    counter = iter(range(1_000_000))

    def make(files: Mapping[str, bytes]) -> Path:
        return write_tree(tmp_path / f"model{next(counter)}", files)

    return make
