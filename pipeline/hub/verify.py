"""Integrity of Hub files: every file is checked against the digest the Hub gives for it.

An LFS file has ``lfs.sha256``, which the layer writer computes anyway (:func:`check_lfs_digests`, no
extra pass); any other file has its git blob id, ``sha1(b"blob <size>\\0" + data)`` (:func:`git_blob_id`
on a downloaded file, :class:`ContentCheck` on bytes streaming past; such files are small). A mismatch
is an :class:`IntegrityError` naming the model, the file, what came and what the Hub says.

Example::

    paths = hub.download(snapshot, snapshot.files, cache_dir=Path("cache"))
    check_git_blob_ids(snapshot.files, paths, model=snapshot.hf_id)      # before building
    check_lfs_digests(snapshot.files, layer.files, model=snapshot.hf_id)  # on the written layer, before publishing

While a layer is written, :func:`lfs_file_check` gives the check of one file as the writer finishes it
(``write_layer(..., on_file=...)``), so a corrupt file stops the upload at its end, not the layer's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pipeline.errors import IntegrityError
from pipeline.hub.client import RepoFile
from pipeline.oci.estargz import FileRecord

_READ_PIECE = 1024 * 1024


def git_blob_id(path: Path) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\\0"`` followed by its bytes."""
    digest = _git_blob_hash(path.stat().st_size)
    with open(path, "rb") as handle:
        while piece := handle.read(_READ_PIECE):
            digest.update(piece)
    return digest.hexdigest()


def mismatch(model: str, path: str, kind: str, actual: str, expected: str | None) -> IntegrityError:
    """The error for content that is not what the Hub lists."""
    return IntegrityError(f"{model}: {path}: {kind} is {actual}, the Hub says {expected}; not published")


def check_git_blob_ids(files: Iterable[RepoFile], paths: Mapping[str, Path], *, model: str) -> None:
    """Check every non-LFS file against its git blob id (LFS files are checked by :func:`check_lfs_digests`)."""
    for repo_file in files:
        if repo_file.lfs_sha256 is None:
            actual = git_blob_id(paths[repo_file.path])
            if actual != repo_file.git_blob_id:
                raise mismatch(model, repo_file.path, "git blob id", actual, repo_file.git_blob_id)


def check_lfs_digests(files: Iterable[RepoFile], records: Iterable[FileRecord], *, model: str) -> None:
    """Check every LFS file's sha256, as the layer writer computed it, against the Hub's."""
    written = {record.path: record.digest for record in records}
    for repo_file in files:
        if repo_file.lfs_sha256 is not None:
            _check_lfs_digest(model, repo_file, written[repo_file.path])


def lfs_file_check(files: Iterable[RepoFile], *, model: str) -> Callable[[FileRecord], None]:
    """The check of one written file's sha256 against the Hub's, for ``write_layer(..., on_file=...)``."""
    by_path = {repo_file.path: repo_file for repo_file in files if repo_file.lfs_sha256 is not None}

    def check(record: FileRecord) -> None:
        repo_file = by_path.get(record.path)
        if repo_file is not None:
            _check_lfs_digest(model, repo_file, record.digest)

    return check


def _check_lfs_digest(model: str, repo_file: RepoFile, digest: str) -> None:
    actual = digest.removeprefix("sha256:")
    if actual != repo_file.lfs_sha256:
        raise mismatch(model, repo_file.path, "sha256", actual, repo_file.lfs_sha256)


def check_empty_files(model: str, files: Iterable[RepoFile]) -> None:
    """Files the Hub lists as empty: their digests must be those of no bytes (nothing is read to check them)."""
    for repo_file in files:
        check = ContentCheck(model, repo_file, sha256=True)
        check.finish()


class ContentCheck:
    """Checks one file's bytes as they stream past: the count, and the git blob id of a non-LFS file.

    An LFS file's sha256 is left to the layer writer, which computes it anyway (:func:`check_lfs_digests`),
    unless ``sha256`` asks for it here (a file read outside the layer).

    Example::

        check = ContentCheck("org/model", repo_file)
        for piece in pieces:
            check.update(piece)
        check.finish()      # IntegrityError when the bytes are not what the Hub lists
    """

    def __init__(self, model: str, file: RepoFile, *, sha256: bool = False) -> None:
        self.model = model
        self.file = file
        self.size = 0
        lfs = file.lfs_sha256 is not None
        self._git = None if lfs else _git_blob_hash(file.size)
        self._sha256 = hashlib.sha256() if lfs and sha256 else None

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self._git is not None:
            self._git.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)

    def finish(self) -> None:
        file = self.file
        if self.size != file.size:
            raise IntegrityError(
                f"{self.model}: {file.path}: the Hub lists {file.size:,} bytes, {self.size:,} came; not published"
            )
        if self._git is not None and self._git.hexdigest() != file.git_blob_id:
            raise mismatch(self.model, file.path, "git blob id", self._git.hexdigest(), file.git_blob_id)
        if self._sha256 is not None and self._sha256.hexdigest() != file.lfs_sha256:
            raise mismatch(self.model, file.path, "sha256", self._sha256.hexdigest(), file.lfs_sha256)


def _git_blob_hash(size: int) -> hashlib._Hash:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % size)
    return digest
