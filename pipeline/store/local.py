"""The local directory backend: the embedded default store.

Atomicity comes from the filesystem: every object is written to a temporary file under ``uploads/``,
fsynced, and renamed into place, so a reader (or a crash) never sees part of an object.

Example::

    backend = LocalBackend("store")
    backend.write("repositories/gpt2/tags/latest", b"{...}")
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import NotFoundError, StoreError
from pipeline.store.backend import UPLOADS_PREFIX, IncompleteUpload, ObjectInfo, check_key

READ_PIECE = 1024 * 1024
# Start writing back every this many bytes of an upload, so the fsync at commit has little left to do.
WRITEBACK_STEP = 32 * 1024 * 1024


class LocalUpload:
    def __init__(self, backend: LocalBackend) -> None:
        self._backend = backend
        self.path = backend.temp_path()
        self._file = open(self.path, "xb")
        self._written = 0
        self._written_back = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            count = self._file.write(data)
            self._written += count
            if self._written - self._written_back >= WRITEBACK_STEP:
                self._start_writeback()
            return count
        except OSError as err:
            raise _store_error(err, self.path) from err

    def _start_writeback(self) -> None:
        """Start (without waiting) writing back what was written: the disk works while we compress.

        The kernel would otherwise wait for gigabytes of dirty pages, and the fsync at commit would
        write the whole blob while nothing else runs. DONTNEED also keeps a blob we will not read
        again from crowding the page cache.
        """
        self._file.flush()
        os.posix_fadvise(self._file.fileno(), self._written_back, 0, os.POSIX_FADV_DONTNEED)
        self._written_back = self._written

    def commit(self, key: str) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._backend.install(self.path, key)
        except OSError as err:
            self.abort()
            raise _store_error(err, self.path) from err

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class LocalBackend:
    """Objects as files under ``root``; keys are relative paths."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def url(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def temp_path(self) -> Path:
        directory = self.root / UPLOADS_PREFIX
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{uuid.uuid4().hex}.part"

    def install(self, temp: Path, key: str) -> None:
        """Rename a complete, fsynced temporary file to ``key``."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None  # a directory is no object (a bucket has none): keys name files only
        return ObjectInfo(key, info.st_size, info.st_mtime)

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as err:
            raise NotFoundError(f"{key} is not in the store at {self.root}") from err
        except OSError as err:
            raise _store_error(err, self.path(key)) from err

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            handle = open(self.path(key), "rb")
        except (FileNotFoundError, NotADirectoryError) as err:
            raise NotFoundError(f"{key} is not in the store at {self.root}") from err
        with handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                piece = handle.read(min(READ_PIECE, remaining))
                if not piece:
                    raise StoreError(f"{key} ended {remaining} bytes early")
                remaining -= len(piece)
                yield piece

    def write(self, key: str, data: bytes) -> None:
        upload = LocalUpload(self)
        upload.write(data)
        upload.commit(key)

    def upload(self) -> LocalUpload:
        return LocalUpload(self)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base, _, _ = prefix.rpartition("/")
        directory = self.root / base if base else self.root
        if not directory.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        info = path.stat()
                    except FileNotFoundError:
                        continue  # deleted while listing
                    yield ObjectInfo(key, info.st_size, info.st_mtime)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def touch(self, key: str) -> None:
        os.utime(self.path(key))

    def incomplete_uploads(self) -> Iterator[IncompleteUpload]:
        return iter(())  # a killed upload leaves a plain file under uploads/, which list() shows

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        self.delete(upload.key)

    def presigned_url(self, key: str, expires_in: int) -> None:
        return None  # files have no URL of their own: the registry serves them


def _store_error(err: OSError, path: Path) -> StoreError:
    if err.errno == errno.ENOSPC:
        return StoreError(f"disk full while writing {path}: free some space and run again (nothing was published)")
    return StoreError(f"cannot write {path}: {err.strerror}")
