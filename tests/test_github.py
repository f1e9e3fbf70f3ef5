"""What the workflows read from modelyard: annotations on the right lines, Markdown summaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.github import annotation, escape_data, markdown_table, problem_annotation
from tests.conftest import ROOT


def test_workflow_command_escaping() -> None:
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert annotation("warning", "a, b: c") == "::warning::a, b: c"
    assert (
        annotation("error", "bad\nvalue", file="dir/a,b:c.yaml", line=3, title="x: y")
        == "::error file=dir/a%2Cb%3Ac.yaml,line=3,title=x%3A y::bad%0Avalue"
    )


def test_problems_become_annotations_on_their_lines() -> None:
    assert (
        problem_annotation(
            "models/models.yaml:12: models[3] (org/x).sha: expected 40 lowercase hex characters, got 'ab'"
        )
        == "::error file=models/models.yaml,line=12,title=models[3] (org/x).sha::expected 40 lowercase hex characters, got 'ab'"
    )
    assert (
        problem_annotation("models/models.yaml:3: not valid YAML: found unexpected end of stream")
        == "::error file=models/models.yaml,line=3,title=not valid YAML::found unexpected end of stream"
    )
    # No line number: an annotation on the run, with the whole text.
    assert (
        problem_annotation("models/nope.yaml: cannot read: No such file")
        == "::error::models/nope.yaml: cannot read: No such file"
    )


def test_markdown_tables_keep_cells_whole() -> None:
    table = markdown_table(["model", "size"], [["a|b", "1\n2"], ["c", "3"]], align="lr")
    assert table.splitlines() == ["| model | size |", "| :-- | --: |", "| a\\|b | 1 2 |", "| c | 3 |"]


def test_validate_annotates_the_pull_request(tmp_path: Path) -> None:
    models = tmp_path / "models" / "models.yaml"
    models.parent.mkdir()
    models.write_text("models:\n  - name: gpt2\n    sha: nope\n  - name: a//b\n    sha: " + "a" * 40 + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--format", "github", "models/models.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "::error file=models/models.yaml,line=3,title=models[0] (gpt2).sha::expected 40 lowercase hex characters, got 'nope'",
        "::error file=models/models.yaml,line=4,title=models[1] (a//b).name::'a//b' is not a Hugging Face repo id (expected 'org/name' or 'name')",
    ]
    assert result.stderr.strip() == "2 problem(s) found"
    models.write_text("models:\n  - name: gpt2\n    sha: " + "a" * 40 + "\n")
    valid = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--format", "github", str(models)],
        capture_output=True,
        text=True,
    )
    assert valid.returncode == 0 and valid.stdout.strip() == f"{models}: 1 models, valid"


def test_gc_dry_run_for_the_job_summary(tmp_path: Path) -> None:
    from pipeline.store import LocalBackend, Store
    from tests.registry_fixtures import publish, small_model_files

    store = Store(LocalBackend(tmp_path / "store"))
    publish(store, tmp_path / "model", small_model_files())
    for index in range(3):  # orphans: no tag reaches them
        with store.blob_writer() as blob:
            blob.write(b"orphan %d" % index * (index + 1))
            blob.commit()
    command = [sys.executable, "-m", "pipeline", "gc", "--store", str(tmp_path / "store"), "--grace", "0s"]
    result = subprocess.run([*command, "--dry-run", "--format", "markdown"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "## modelyard gc --dry-run"
    assert lines[2].startswith(f"`{tmp_path / 'store'}` (grace 0 h): would remove 3 ")
    assert lines[4:6] == ["| object | bytes | age |", "| :-- | --: | --: |"]
    assert lines[6].startswith("| `blobs/sha256/") and lines[6].endswith("| 24 | 0 h |")  # the largest first
    assert len(lines) == 9 and len(list((tmp_path / "store" / "blobs" / "sha256").iterdir())) >= 3 + 4
    removed = subprocess.run([*command, "--format", "markdown"], capture_output=True, text=True, cwd=ROOT)
    assert removed.stdout.startswith("## modelyard gc\n") and "removed 3 " in removed.stdout
