"""One build of a model at a time per download cache, across processes.

Two builds sharing a cache (the default ``~/.cache/modelyard/hub``) would otherwise trip over each
other: one removes a model's downloads when it is done while the other still reads them. Each model
has a lock file under ``<cache>/.modelyard/locks/``; a build holds it from its skip check to the
removal of its downloads, and a second build of the same model waits, then finds it published and
skips it. The lock is an ``flock``: a killed build releases it with its last breath.

Example::

    with model_lock(Path("~/.cache/modelyard/hub").expanduser(), "org/model"):
        ...  # check, download, build, clean the cache
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
LOCKS_DIR = Path(".modelyard") / "locks"


@contextmanager
def model_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """Hold the lock of repository ``name`` in ``cache_dir`` (waiting for another process that holds it)."""
    directory = cache_dir / LOCKS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    # Lock files stay: removing one while another process waits on it would give two locks.
    path = directory / (name.replace("/", "--") + ".lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another build of %s that uses the cache %s", name, cache_dir)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
