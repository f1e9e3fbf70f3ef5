"""What a build of a models file would do and why, before it downloads anything.

For each entry the plan says whether a build would build it, and why: ``new`` (nothing published
under its tag), ``stale revision``, ``stale selection`` (other ``include``/``exclude``), ``stale format
version``, ``incomplete`` (published, but not everything a publish writes is there), ``previously
failed`` (the store's failure record of this revision and tag), ``forced`` (``--force``), or ``up to
date`` (skipped). Whether a model is up to date is decided by the build's own skip check
(:func:`pipeline.build.batch.published_image`), so the plan and the build never disagree; only the
store is read for it. For the models to build, the Hub lists the pinned revision: the size to
download is known when it answers ("size unknown: hub unreachable" otherwise).

The same plan previews ``modelyard build`` (with the disk it needs, :func:`disk_needs`) and is what
``modelyard plan`` prints, as text, JSON, or a GitHub Actions matrix (:func:`github_matrix`).

Example::

    plan = make_plan(load_models("models/models.yaml"), open_store("store"), HubClient(retries=1))
    for step in plan.to_build:
        print(step.model.repository, step.reason, step.download)
    check_disk(disk_needs(plan, cache_dir=Path("~/.cache/modelyard/hub").expanduser(), store_dir=Path("store")))
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.build.batch import published_image
from pipeline.errors import HubError, HubUnavailableError, ModelyardError
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec
from pipeline.oci.format import CHUNK_SIZE, FORMAT_ANNOTATION, FORMAT_VERSION
from pipeline.oci.image import ANNOTATION_EXCLUDE, ANNOTATION_INCLUDE, ANNOTATION_REVISION, ImageMetadata
from pipeline.store import Store

Reason = Literal[
    "new",
    "stale revision",
    "stale selection",
    "stale format version",
    "incomplete",
    "previously failed",
    "forced",
    "up to date",
]
MAX_MATRIX_JOBS = 256  # GitHub Actions refuses a matrix of more jobs
LOOKUP_THREADS = 8
HUB_UNREACHABLE = "size unknown: hub unreachable"


class DiskSpaceError(ModelyardError):
    """A build would need more disk than is free."""


@dataclass(frozen=True)
class Step:
    """What a build would do with one entry of the models file."""

    model: ModelSpec
    reason: Reason
    detail: str = ""  # what differs, or how the last build failed
    download: int | None = None  # bytes the build downloads (the files include/exclude keep); None: unknown
    files: int | None = None
    size_note: str = ""  # why the size is unknown

    @property
    def builds(self) -> bool:
        return self.reason != "up to date"

    @property
    def stored(self) -> int | None:
        """At most this many bytes land in the store (the layer; configs and manifests are tiny)."""
        if self.download is None or self.files is None:
            return None
        return layer_size_bound(self.download, self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.model.hf_id,
            "repository": self.model.repository,
            "tag": self.model.tag,
            "revision": self.model.revision,
            "source": self.model.source,
            "action": "build" if self.builds else "skip",
            "reason": self.reason,
            "detail": self.detail,
            "download_bytes": self.download,
            "stored_bytes_at_most": self.stored,
            "files": self.files,
            "size_note": self.size_note,
        }


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    store: str  # the store's URL, for messages
    store_is_new: bool  # nothing written there yet: a build creates it

    @property
    def to_build(self) -> list[Step]:
        return [step for step in self.steps if step.builds]

    @property
    def download(self) -> int:
        """Bytes to download, of the models whose size is known."""
        return sum(step.download or 0 for step in self.to_build)

    @property
    def stored(self) -> int:
        return sum(step.stored or 0 for step in self.to_build)

    @property
    def unknown_sizes(self) -> int:
        return sum(step.download is None for step in self.to_build)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "store_is_new": self.store_is_new,
            "models": [step.to_json() for step in self.steps],
            "to_build": len(self.to_build),
            "up_to_date": len(self.steps) - len(self.to_build),
            "download_bytes": self.download,
            "stored_bytes_at_most": self.stored,
            "unknown_sizes": self.unknown_sizes,
        }


def make_plan(models: Sequence[ModelSpec], store: Store, hub: HubClient | None, *, force: bool = False) -> Plan:
    """The plan for ``models``; ``hub`` (None: no sizes) lists the revisions to build, a few at a time."""
    store_is_new = not store.backend.exists()  # a bucket that does not exist raises MissingStoreError
    if store_is_new:
        steps = [Step(model, "new") for model in models]
    else:
        with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="plan-store") as pool:
            steps = list(pool.map(lambda model: assess(store, model), models))  # a bucket answers in parallel
    if force:
        steps = [
            step if step.builds else Step(step.model, "forced", "up to date; --force rebuilds it") for step in steps
        ]
    if hub is not None:
        steps = _with_sizes(steps, hub)
    return Plan(tuple(steps), store.backend.url(), store_is_new)


def assess(store: Store, model: ModelSpec) -> Step:
    """What a build would do with ``model``, from the store alone."""
    if published_image(store, model) is not None:
        return Step(model, "up to date")
    failure = store.get_failure(model.repository)
    if failure is not None and (failure.get("revision"), failure.get("tag")) == (model.revision, model.tag):
        return Step(model, "previously failed", str(failure.get("error", "")))
    descriptor = store.get_tag(model.repository, model.tag)
    if descriptor is None or not store.has_blob(descriptor.digest):
        return Step(model, "new")
    annotations = store.read_json_blob(descriptor.digest).get("annotations") or {}
    reason, detail = staleness(annotations, model)
    return Step(model, reason, detail)


def staleness(annotations: Mapping[str, str], model: ModelSpec) -> tuple[Reason, str]:
    """Why a published index (by its annotations) is not ``model``: its revision, selection or format.

    When all three match, what is missing is something else a publish writes (a blob, the catalog
    record): ``incomplete``.
    """
    wanted = ImageMetadata(title="", revision=model.revision, include=model.include, exclude=model.exclude)
    expected = wanted.annotations()
    published_revision = annotations.get(ANNOTATION_REVISION, "")
    if published_revision != model.revision:
        return "stale revision", f"published {published_revision[:12] or 'no revision'}, pinned {model.revision[:12]}"
    keys = (ANNOTATION_INCLUDE, ANNOTATION_EXCLUDE)
    if any(annotations.get(key) != expected.get(key) for key in keys):
        was = ", ".join(f"{key.rsplit('.', 1)[1]} {annotations.get(key) or '[]'}" for key in keys)
        return "stale selection", f"published with {was}"
    if annotations.get(FORMAT_ANNOTATION) != FORMAT_VERSION:
        return "stale format version", f"format {annotations.get(FORMAT_ANNOTATION, '?')}, now {FORMAT_VERSION}"
    return "incomplete", "published, but not all that a publish writes is in the store"


def _with_sizes(steps: list[Step], hub: HubClient) -> list[Step]:
    """Steps to build, with the size of the files they would download, asked of the Hub a few at a time.

    Once the Hub is unreachable, the lookups not yet made are not made: each would wait out its retries.
    """
    unreachable = threading.Event()

    def sized(step: Step) -> Step:
        if not step.builds:
            return step
        if unreachable.is_set():
            return _unsized(step, HUB_UNREACHABLE)
        try:
            listed = hub.list_files(step.model.hf_id, step.model.revision)
        except HubUnavailableError:
            unreachable.set()
            return _unsized(step, HUB_UNREACHABLE)
        except HubError as err:
            return _unsized(step, f"size unknown: {err}")
        files = [f for f in listed if step.model.wants(f.path)]
        return Step(step.model, step.reason, step.detail, sum(f.size for f in files), len(files))

    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="plan-hub") as pool:
        return list(pool.map(sized, steps))


def _unsized(step: Step, note: str) -> Step:
    return Step(step.model, step.reason, step.detail, size_note=note)


def layer_size_bound(content: int, files: int) -> int:
    """An upper bound of the eStargz layer of ``files`` files holding ``content`` bytes.

    Weights hardly compress, so the bound is the content plus what can be added to it: tar headers
    and padding (and a header per directory, at most one per file), a gzip member and a TOC entry
    per 4 MiB chunk, deflate's worst-case growth on incompressible bytes (a third of a per mille
    here, well above its stored blocks' 5 bytes per 64 KiB), the footer.
    """
    chunks = files + content // CHUNK_SIZE
    return content + files * 1536 + chunks * 512 + content // 3000 + 64 * 1024


# disk


@dataclass(frozen=True)
class DiskNeed:
    """Bytes a build needs on one filesystem, against the bytes free there."""

    paths: tuple[Path, ...]  # what lives on it: the download cache, the store
    needed: int
    free: int

    @property
    def fits(self) -> bool:
        return self.needed <= self.free


def disk_needs(
    plan: Plan,
    *,
    cache_dir: Path | None,
    store_dir: Path | None,
    keep_cache: bool = False,
    filesystem: Callable[[Path], tuple[int, int]] | None = None,
) -> list[DiskNeed]:
    """What the plan needs on the disk of the download cache and of a local store.

    ``cache_dir`` is None when the build streams from the Hub (no download on disk), ``store_dir``
    when the store is a bucket. A build holds one model's download at a time (all of them with
    ``keep_cache``) and adds each layer to the store; when both live on one filesystem, their needs
    add up. ``filesystem`` gives (device id, free bytes) of a path; by default, of the nearest
    directory that exists.
    """
    of = filesystem or _filesystem
    downloads = [step.download or 0 for step in plan.to_build]
    places: list[tuple[Path, int]] = []
    if cache_dir is not None:
        places.append((cache_dir, sum(downloads) if keep_cache else max(downloads, default=0)))
    if store_dir is not None:
        places.append((store_dir, plan.stored))
    needs: dict[int, DiskNeed] = {}
    for path, needed in places:
        device, free = of(path)
        known = needs.get(device)
        if known is None:
            needs[device] = DiskNeed((path,), needed, free)
        else:
            needs[device] = DiskNeed((*known.paths, path), known.needed + needed, free)
    return list(needs.values())


def check_disk(needs: Sequence[DiskNeed]) -> None:
    """Refuse a build that cannot fit, naming the bytes needed and the bytes free."""
    for need in needs:
        if not need.fits:
            where = " and ".join(str(path) for path in need.paths)
            on = "their filesystem" if len(need.paths) > 1 else "its filesystem"
            raise DiskSpaceError(
                f"not enough disk for this build: {where} need {human_bytes(need.needed)} ({need.needed:,} bytes) "
                f"on {on}, which has {human_bytes(need.free)} ({need.free:,} bytes) free. Build fewer models "
                "(--only), free some space, or choose another --cache-dir or --store (an s3:// bucket)"
            )


def _filesystem(path: Path) -> tuple[int, int]:
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.stat(existing).st_dev, shutil.disk_usage(existing).free


def human_bytes(size: int) -> str:
    """``1.2 GB``: decimal units, as download sizes are shown on the Hub."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# GitHub Actions


def github_matrix(plan: Plan, max_jobs: int = MAX_MATRIX_JOBS) -> dict[str, list[dict[str, Any]]]:
    """The models to build as a GitHub Actions matrix: ``{"include": [job, ...]}``, at most ``max_jobs`` jobs.

    One job per repository (its variants build together, so a concurrency group per job keeps two
    builds of one model apart), or, with more repositories than jobs, repositories grouped into ``max_jobs`` jobs of
    about equal download size (largest first into the lightest job). Each job::

        {"job": "gpt2", "models": "gpt2", "count": 1, "download_bytes": 548105171}
        {"job": "gpt2 +2", "models": "gpt2 org/a org/b", "count": 3, "download_bytes": 549000000}

    (repository names: the Hugging Face ids lower-cased.)

    ``models`` is what ``modelyard build --only`` takes. Nothing to build is ``{"include": []}``,
    which GitHub refuses as a matrix: guard the job on it.
    """
    if not 1 <= max_jobs <= MAX_MATRIX_JOBS:
        raise ModelyardError(f"a GitHub matrix holds 1 to {MAX_MATRIX_JOBS} jobs, not {max_jobs}")
    sizes: dict[str, int] = {}
    for step in plan.to_build:
        name = step.model.repository  # not the HF id: two spellings of one id are one repository
        sizes[name] = sizes.get(name, 0) + (step.download or 0)
    if len(sizes) <= max_jobs:
        groups = [[name] for name in sizes]
    else:
        bins: list[list[str]] = [[] for _ in range(max_jobs)]
        loads = [0] * max_jobs
        for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
            lightest = min(range(max_jobs), key=lambda i: (loads[i], len(bins[i]), i))
            bins[lightest].append(name)
            loads[lightest] += sizes[name]
        groups = [sorted(group) for group in bins if group]
    include = [
        {
            "job": group[0] if len(group) == 1 else f"{group[0]} +{len(group) - 1}",
            "models": " ".join(group),
            "count": len(group),
            "download_bytes": sum(sizes[name] for name in group),
        }
        for group in groups
    ]
    return {"include": include}
