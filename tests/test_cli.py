"""The modelyard command line: exit codes, messages, and the build → export path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.store import LocalBackend, Store
from tests.conftest import with_formats

MakeTree = Callable[[Mapping[str, bytes]], Path]


def test_validate_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: gpt2\n    sha: " + "a" * 40 + "\n")
    assert main(["validate", str(good)]) == 0
    assert "1 models, valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: gpt2\n    sha: nope\n    tagAs: ''\n")
    assert main(["validate", str(bad)]) == 1
    errors = capsys.readouterr().err
    assert f"error: {bad}:3: models[0] (gpt2).sha: expected 40 lowercase hex characters, got 'nope'" in errors
    assert f"error: {bad}:4: models[0] (gpt2).tagAs: '' is not a valid OCI tag" in errors
    assert "2 problem(s) found" in errors


def test_build_from_dir_then_export(tmp_path: Path, tree: MakeTree, capsys: pytest.CaptureFixture[str]) -> None:
    source = tree({"config.json": b"{}", "w.bin": b"w" * 1000})
    store = tmp_path / "store"
    assert main(["build", "--from-dir", str(source), "--name", "My-Org/Model", "--store", str(store)]) == 0
    output = capsys.readouterr().out
    assert "my-org/model:latest" in output and "files    2 (1,002 bytes)" in output
    assert "(my-org/model:latest-modelkit)" in output and "(my-org/model:latest-modelpack)" in output
    assert Store(LocalBackend(store)).tags("my-org/model") == with_formats(["latest"])
    assert main(["export-oci-layout", "my-org/model", str(tmp_path / "oci"), "--store", str(store)]) == 0
    assert (tmp_path / "oci" / "index.json").exists()


def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--from-dir", str(tmp_path / "missing"), "--name", "a/b"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'} is not a directory"
    assert main(["build", "--from-dir", str(tmp_path), "--name", "a//b"]) == 1
    assert "is not a Hugging Face repo id" in capsys.readouterr().err
    (tmp_path / "s").mkdir()
    assert main(["export-oci-layout", "a/b:v1", str(tmp_path / "o"), "--store", str(tmp_path / "s")]) == 1
    assert "a/b:v1 is not in the store" in capsys.readouterr().err


def test_the_console_command_teaches() -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline", "build", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "HF_ENDPOINT" in result.stdout and "SOURCE_DATE_EPOCH" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--platform", "linux"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "os/architecture" in bad.stderr


def test_one_progress_bar_per_model_shows_download_and_build() -> None:
    from pipeline.cli.build import BatchProgress, DownloadAndBuildBar
    from pipeline.models.file import ModelSpec

    progress = BatchProgress()
    model = ModelSpec("org/model", "a" * 40)
    downloaded, built = progress.phase(model, "download", 1000), progress.phase(model, "build", 1000)
    downloaded(600)
    built(250)
    (task,) = progress.bars.tasks  # streaming starts both phases: still one bar
    assert (task.fields["download"], task.fields["build"], task.completed, task.total) == (600, 250, 850, 2000)
    assert task.fields["counts"] == "600 bytes downloaded, 250 bytes of 1.0 kB built"
    bar = DownloadAndBuildBar().render(task)  # built, then downloaded but not yet built, then to come
    assert [(span.end - span.start, span.style) for span in bar.spans] == [
        (10, "bar.complete"),
        (14, "cyan"),
        (16, "bar.back"),
    ]


def test_an_empty_store_location_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--from-dir", ".", "--name", "a/b", "--store", ""]) == 1  # never the current directory
    assert "the store location is empty" in capsys.readouterr().err
