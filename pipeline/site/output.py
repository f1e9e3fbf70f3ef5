"""The edges of the site: read what it shows from the store, write the rendered files where they go.

The site is written into the store's ``site/`` (which ``modelyard serve`` serves at ``/``) and, with
``out``, into a directory as well. Writes are incremental and ordered so that a reader never meets a
broken link: only files whose bytes changed are written, assets first, then model pages and the JSON
API, then the index; files no longer part of the site are removed last. The rendered bytes depend
only on the input, so a re-render after one more model writes that model's page and the index.

Example::

    report = publish_site(open_store("store"), load_models("models/models.yaml"), SiteOptions(), out=Path("public"))
    print(report.summary())
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.errors import ModelyardError, NotFoundError, StoreError
from pipeline.files import replace_file
from pipeline.models.file import ModelSpec
from pipeline.site.catalog import ModelEntry, catalog_entries
from pipeline.site.render import SiteOptions, Templates, render_site
from pipeline.store import Store
from pipeline.store.store import CATALOG_PREFIX, FAILURES_PREFIX, SITE_PREFIX

log = logging.getLogger(__name__)
LAST = ("index.html",)  # written after everything it links to
MODELS_JSON = "api/models.json"


@dataclass(frozen=True)
class SiteReport:
    models: int
    files: int
    written: int
    removed: int
    bytes: int
    seconds: float
    where: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"site: {self.models} models, {self.files} files ({self.bytes / 1e6:.1f} MB); {self.written} written, "
            f"{self.removed} removed, in {self.seconds:.1f} s, into {', '.join(self.where)}"
        )


def load_entries(store: Store, specs: Sequence[ModelSpec] = ()) -> list[ModelEntry]:
    """What the site lists: every catalog record, and every model of ``specs`` (built or not), with failures."""
    records = {}
    for info in store.backend.list(CATALOG_PREFIX):  # one listing gives the names and when each was published
        name = info.key[len(CATALOG_PREFIX) : -len(".json")]
        record = store.get_catalog(name) if info.key.endswith(".json") else None
        if record is not None:
            records[name] = {**record, "published_at": _iso(info.modified)}
    listed = set(records) | {spec.repository for spec in specs}
    failed = {
        key[len(FAILURES_PREFIX) : -len(".json")] for key in _keys(store, FAILURES_PREFIX) if key.endswith(".json")
    }
    failures = {}
    for name in sorted(failed & listed):
        failure = store.get_failure(name)
        if failure is not None:
            failures[name] = failure
    return catalog_entries(records, specs, failures)


def registry_host_of(store: Store) -> str | None:
    """The registry host the site in the store was last rendered with (``modelyard build`` keeps it)."""
    try:
        value = json.loads(store.backend.read(SITE_PREFIX + MODELS_JSON))
    except (NotFoundError, ValueError):
        return None
    host = value.get("registry") if isinstance(value, dict) else None
    return host if isinstance(host, str) and host else None


def publish_site(
    store: Store,
    specs: Sequence[ModelSpec],
    options: SiteOptions,
    out: Path | None = None,
    templates: Templates | None = None,
) -> SiteReport:
    """Render the site from ``store`` and write it into the store's ``site/`` (and into ``out``)."""
    started = time.monotonic()
    entries = load_entries(store, specs)
    files = render_site(entries, options, templates or Templates.load())
    targets: list[Target] = [StoreTarget(store)]
    if out is not None:
        targets.append(DirectoryTarget(out))
    written = removed = 0
    for target in targets:
        w, r = write_files(files, target)
        written, removed = written + w, removed + r
    return SiteReport(
        models=len(entries),
        files=len(files),
        written=written,
        removed=removed,
        bytes=sum(len(data) for data in files.values()),
        seconds=time.monotonic() - started,
        where=tuple(target.where() for target in targets),
    )


class Target(Protocol):
    """Where a site is written: the store's ``site/`` or a plain directory."""

    def existing(self) -> dict[str, int]:
        """Paths already there, with their sizes."""
        ...

    def same(self, path: str, data: bytes) -> bool:
        """Whether ``path`` already holds exactly ``data`` (its size is known to match)."""
        ...

    def write(self, path: str, data: bytes) -> None: ...

    def delete(self, path: str) -> None: ...

    def where(self) -> str: ...


def write_files(files: Mapping[str, bytes], target: Target) -> tuple[int, int]:
    """Write what changed, in an order that never shows a broken link; remove what is gone. (written, removed)."""
    existing = target.existing()
    written = 0
    for path in _order(files):
        data = files[path]
        if existing.get(path) == len(data) and target.same(path, data):
            continue
        target.write(path, data)
        written += 1
    stale = sorted(set(existing) - set(files))
    for path in stale:
        target.delete(path)
    return written, len(stale)


def _order(paths: Iterable[str]) -> list[str]:
    """Assets, then pages and data, then the index pages that link to them."""
    return sorted(paths, key=lambda p: (0 if p.startswith("assets/") else 2 if p in LAST else 1, p))


class StoreTarget:
    """The store's ``site/``. Unchanged files are recognised by size and content, read back only when
    the size matches (small files; a bucket answers those reads quickly)."""

    def __init__(self, store: Store) -> None:
        self.backend = store.backend

    def existing(self) -> dict[str, int]:
        return {info.key[len(SITE_PREFIX) :]: info.size for info in self.backend.list(SITE_PREFIX)}

    def same(self, path: str, data: bytes) -> bool:
        try:
            return self.backend.read(SITE_PREFIX + path) == data
        except NotFoundError:
            return False

    def write(self, path: str, data: bytes) -> None:
        self.backend.write(SITE_PREFIX + path, data)

    def delete(self, path: str) -> None:
        self.backend.delete(SITE_PREFIX + path)

    def where(self) -> str:
        return f"{self.backend.url().rstrip('/')}/{SITE_PREFIX}"


class DirectoryTarget:
    """A plain directory (``--out``), ready for a static host or ``aws s3 sync``."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        if self.root.exists() and not self.root.is_dir():
            raise ModelyardError(f"--out {root}: not a directory")

    def existing(self) -> dict[str, int]:
        found = {}
        for path in self.root.rglob("*") if self.root.is_dir() else ():
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(self.root).as_posix()] = path.stat().st_size
        return found

    def same(self, path: str, data: bytes) -> bool:
        try:
            return (self.root / path).read_bytes() == data
        except OSError:
            return False

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_file(target, data, mode=0o644, durable=False)
        except OSError as err:
            raise StoreError(f"cannot write {target}: {err.strerror}") from err

    def delete(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)
        parent = (self.root / path).parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def where(self) -> str:
        return str(self.root)


def _iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))


def _keys(store: Store, prefix: str) -> Iterator[str]:
    return (info.key for info in store.backend.list(prefix))


__all__ = ["SiteReport", "load_entries", "publish_site", "registry_host_of"]
