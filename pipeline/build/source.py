"""Layer input from a local directory.

Rules (documented in the README):

- regular files are taken with their path relative to the directory;
- a symlink to a regular file is followed and stored as a regular file with the target's content
  (the Hugging Face cache is made of such links), wherever the target lives;
- a symlink to a directory, a dangling symlink, or a special file (fifo, socket, device) is refused;
- ``.git/`` is skipped (repository metadata, never part of a model); empty directories do not appear
  (Hugging Face repositories, being git, cannot hold them).

Example::

    files = files_from_dir("./my-model")
    layer = write_layer(files, sink)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import LayerInputError
from pipeline.oci.estargz import LayerFile

SKIPPED_DIRS = frozenset({".git"})


def opener(path: Path) -> Callable[[], BinaryIO]:
    """A function that opens ``path`` for reading, for :class:`LayerFile`."""

    def open_file() -> BinaryIO:
        return open(path, "rb")

    return open_file


def files_from_dir(root: str | Path) -> list[LayerFile]:
    """List the files under ``root`` as layer input, following the rules above."""
    root = Path(root)
    if not root.is_dir():
        raise LayerInputError(f"{root} is not a directory")
    files: list[LayerFile] = []

    def refuse(path: Path, why: str) -> LayerInputError:
        return LayerInputError(f"{path}: {why}")

    def on_error(err: OSError) -> None:
        raise LayerInputError(f"cannot read directory {err.filename}: {err.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        directory = Path(dirpath)
        if directory == root:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in dirnames:
            if (directory / name).is_symlink():
                raise refuse(directory / name, "is a symlink to a directory; only links to files are followed")
        for name in filenames:
            path = directory / name
            try:
                info = path.stat()  # follows symlinks
            except FileNotFoundError as err:
                raise refuse(path, "is a dangling symlink") from err
            except OSError as err:
                raise refuse(path, f"cannot stat: {err.strerror}") from err
            if not stat.S_ISREG(info.st_mode):
                raise refuse(path, "is not a regular file (fifo, socket or device); refusing to put it in an image")
            relative = path.relative_to(root).as_posix()
            files.append(LayerFile(relative, info.st_size, opener(path)))
    return files
