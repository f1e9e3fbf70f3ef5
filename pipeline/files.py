"""Files the pipeline writes outside the store (models file, build report, site directory): whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    A reader, or a run killed half-way, sees the old file or the new one, never a truncated one. The file
    gets ``mode``, or by default the mode of the file it replaces (0644 for a new one). ``durable`` syncs
    the data to disk before the rename (a site directory, rebuilt whole by the next run, skips that).
    Example::

        replace_file(Path("report.json"), b'{"version": 1}\\n')
    """
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
