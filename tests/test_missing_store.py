"""A store that does not exist is an error for every command that reads one, never an empty store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.registry_fixtures import S3, moto_s3

READERS = [
    ["gc", "--dry-run"],
    ["push", "--to", "127.0.0.1:1/mirror", "--insecure"],
    ["export-oci-layout", "org/model:latest", "OUT"],
]


@pytest.mark.parametrize("command", READERS, ids=lambda command: command[0])
def test_a_missing_directory(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    argv = [arg.replace("OUT", str(tmp_path / "out")) for arg in command]
    assert main([*argv, "--store", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: no store at {missing}: check --store (a store is what `modelyard build` writes)"
    )
    assert not missing.exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with moto_s3() as server:
        yield server


@pytest.mark.parametrize("command", READERS, ids=lambda command: command[0])
def test_a_missing_bucket_or_prefix(
    command: list[str], s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [arg.replace("OUT", str(tmp_path / "out")) for arg in command]
    assert main([*argv, "--store", "s3://no-such-bucket/prod"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: no bucket 'no-such-bucket' at {s3.endpoint}: create it first, or check --store and AWS_ENDPOINT_URL"
    )
    assert main([*argv, "--store", "s3://models/never-written"]) == 1
    assert "error: no store at s3://models/never-written: check --store" in capsys.readouterr().err


def test_an_empty_store_is_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store").mkdir()
    assert main(["gc", "--dry-run", "--store", str(tmp_path / "store")]) == 0
    assert "would remove 0" in capsys.readouterr().out
