"""Integrity of Hub files: every file is checked against the digest the Hub gives for it.

An LFS file has ``lfs.sha256``, which the layer writer computes anyway (:func:`check_lfs_digests`, no
extra pass); any other file has its git blob id, ``sha1(b"blob <size>\\0" + data)`` (:func:`git_blob_id`;
such files are small).

Example::

    paths = hub.download(snapshot, snapshot.files, cache_dir=Path("cache"))
    check_git_blob_ids(snapshot.files, paths)               # before building
    check_lfs_digests(snapshot.files, layer.files)          # on the written layer, before publishing
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.errors import IntegrityError
from pipeline.hub.client import RepoFile
from pipeline.oci.estargz import FileRecord


def git_blob_id(path: Path) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\\0"`` followed by its bytes."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while piece := handle.read(1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


def check_git_blob_ids(files: Iterable[RepoFile], paths: Mapping[str, Path]) -> None:
    """Check every non-LFS file against its git blob id (LFS files are checked by :func:`check_lfs_digests`)."""
    for repo_file in files:
        if repo_file.lfs_sha256 is None:
            actual = git_blob_id(paths[repo_file.path])
            if actual != repo_file.git_blob_id:
                raise IntegrityError(
                    f"{repo_file.path}: git blob id is {actual}, the Hub says {repo_file.git_blob_id}; not published"
                )


def check_lfs_digests(files: Iterable[RepoFile], records: Iterable[FileRecord]) -> None:
    """Check every LFS file's sha256, as the layer writer computed it, against the Hub's."""
    written = {record.path: record.digest for record in records}
    for repo_file in files:
        if repo_file.lfs_sha256 is not None:
            actual = written[repo_file.path].removeprefix("sha256:")
            if actual != repo_file.lfs_sha256:
                raise IntegrityError(
                    f"{repo_file.path}: sha256 is {actual}, the Hub says {repo_file.lfs_sha256}; not published"
                )
