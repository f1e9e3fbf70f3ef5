"""Reading a model from a local directory: what is taken, followed, skipped or refused."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.build.source import files_from_dir
from pipeline.errors import LayerInputError

MakeTree = Callable[[Mapping[str, bytes]], Path]


def test_links_to_files_are_stored_as_regular_files(tree: MakeTree, tmp_path: Path) -> None:
    outside = tmp_path / "blob-store" / "abc123"
    outside.parent.mkdir()
    outside.write_bytes(b"weights")
    root = tree({"config.json": b"{}"})
    (root / "model.safetensors").symlink_to(outside)  # the Hugging Face cache layout
    files = {f.path: f for f in files_from_dir(root)}
    assert set(files) == {"config.json", "model.safetensors"}
    assert files["model.safetensors"].size == 7
    with files["model.safetensors"].open() as handle:
        assert handle.read() == b"weights"


def test_links_to_directories_and_dangling_links_are_refused(tree: MakeTree, tmp_path: Path) -> None:
    root = tree({"sub/a": b"a"})
    (root / "alias").symlink_to(root / "sub")
    with pytest.raises(LayerInputError, match="alias: is a symlink to a directory"):
        files_from_dir(root)
    root = tree({"a": b"a"})
    (root / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(LayerInputError, match="gone: is a dangling symlink"):
        files_from_dir(root)


def test_special_files_are_refused(tree: MakeTree) -> None:
    root = tree({"a": b"a"})
    os.mkfifo(root / "pipe")
    with pytest.raises(LayerInputError, match="pipe: is not a regular file"):
        files_from_dir(root)


def test_git_metadata_is_skipped_and_a_missing_directory_is_an_error(tree: MakeTree, tmp_path: Path) -> None:
    root = tree({".git/HEAD": b"ref", "sub/.git/keep": b"k", "a": b"a"})
    assert sorted(f.path for f in files_from_dir(root)) == ["a", "sub/.git/keep"]
    with pytest.raises(LayerInputError, match="is not a directory"):
        files_from_dir(tmp_path / "missing")
