"""`modelyard changes`: a pull request's preview of what its merge builds, with no store and no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.models.diff import changed_entries
from pipeline.models.file import parse_models
from tests.conftest import ROOT
from tests.fixture_hub import FixtureHub, FixtureRepo

OLD, NEW, MISSING = "1a" * 20, "2b" * 20, "3c" * 20

BASE = f"""models:
  - name: org/moved
    sha: {OLD}
  - name: org/same
    sha: {OLD}
  - name: org/same
    sha: {OLD}
    tagAs: onnx
    include: ["*.onnx"]
  - name: org/dropped
    sha: {OLD}
"""
HEAD = f"""models:
  - name: org/moved
    sha: {NEW}
  - name: Org/Same            # spelled differently: the same image
    sha: {OLD}
  - name: org/same
    sha: {OLD}
    tagAs: onnx
    include: ["*.onnx", "*.json"]
  - name: org/added
    sha: {NEW}
  - name: org/typo
    sha: {MISSING}
"""


def test_changes_image_by_image() -> None:
    changes = changed_entries(parse_models(BASE), parse_models(HEAD))
    assert [(c.kind, c.model.repository, c.model.tag) for c in changes] == [
        ("revision", "org/moved", "latest"),
        ("selection", "org/same", "onnx"),
        ("added", "org/added", "latest"),
        ("added", "org/typo", "latest"),
        ("removed", "org/dropped", "latest"),
    ]
    assert changes[0].describe() == f"revision {OLD[:12]} → {NEW[:12]}"
    assert changes[1].describe() == "files: include ['*.onnx'] exclude [] → include ['*.onnx', '*.json'] exclude []"
    assert changed_entries(parse_models(HEAD), parse_models(HEAD)) == []


def test_the_preview_in_a_job_summary(tmp_path: Path) -> None:
    base, head = tmp_path / "base.yaml", tmp_path / "models.yaml"
    base.write_text(BASE)
    head.write_text(HEAD)
    files = {"config.json": b"{}", "model.onnx": b"o" * 2_000_000}
    repos = [
        FixtureRepo("org/moved", NEW, files),
        FixtureRepo("org/same", OLD, files),
        FixtureRepo("org/added", NEW, files),
    ]
    with FixtureHub([*repos, FixtureRepo("org/typo", NEW, files)]) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
        command = [sys.executable, "-m", "pipeline", "changes", "--base", str(base), "--models", str(head)]
        result = subprocess.run([*command, "--format", "markdown"], capture_output=True, text=True, env=env, cwd=ROOT)
        text = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "## What this change builds",
        "",
        "4 image(s) build on merge (1 cannot be built as pinned); 1 removed from the file (published images stay).",
    ]
    assert lines[4] == "| model | tag | change | entry | download |"
    assert lines[6] == (
        f"| [org/moved](https://huggingface.co/org/moved/tree/{NEW}) | latest | revision {OLD[:12]} → {NEW[:12]} "
        f"| {head}:2 | 2.0 MB (2 files) |"
    )
    assert lines[7].endswith(f"| {head}:6 | 2.0 MB (2 files) |")  # include ["*.onnx", "*.json"]
    assert lines[9].startswith(f"| [org/typo](https://huggingface.co/org/typo/tree/{MISSING}) | latest | added |")
    assert f"cannot be built: org/typo has no revision {MISSING}" in lines[9]
    assert (
        lines[10]
        == f"| [org/dropped](https://huggingface.co/org/dropped/tree/{OLD}) | latest | removed | {base}:10 |  |"
    )
    assert (
        text.returncode == 0
        and text.stdout.splitlines()[0]
        == f"revision  org/moved:latest  revision {OLD[:12]} → {NEW[:12]}  2.0 MB (2 files)"
    )
