"""Build the models of a models file: skip what is done, build the rest, one failure never stops the others.

For each model: if its ``tagAs`` tag holds this revision and file selection, built with this format
version, and everything that publish writes is there (every blob, the catalog record), it is skipped
without touching the network (and its revision tag is set if it had moved). Otherwise: list the
pinned revision on the Hub, keep the files that ``include``/``exclude`` select, get them, check every
file's digest, stream the layer into the store, publish the image with two tags (``tagAs`` and the
revision), and write the catalog record.

Files come one of two ways (``BatchOptions.download``): ``"cache"`` downloads them into the
huggingface_hub cache, then builds, then cleans the cache (disk: the model once, plus the layer);
``"stream"`` reads them from the Hub straight into the layer writer (:mod:`pipeline.hub.stream`: no
disk, the download overlapped with the build), which is what a model larger than the disk needs.

Example::

    outcomes = build_models(load_models("models/models.yaml"), open_store("store"), HubClient(),
                            BatchOptions(cache_dir=Path("~/.cache/modelyard/hub").expanduser()))
    failed = [o for o in outcomes if o.status == "failed"]
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from huggingface_hub.file_download import repo_folder_name

from pipeline.build.lock import model_lock
from pipeline.build.publish import BuiltImage, build_and_publish, retag, source_date_epoch
from pipeline.build.source import opener
from pipeline.errors import HubError, IntegrityError, ModelyardError, NotFoundError
from pipeline.hub.client import HubClient, RepoFile, RepoSnapshot
from pipeline.hub.stream import HubStream, StreamOptions
from pipeline.hub.verify import check_git_blob_ids, check_lfs_digests, lfs_file_check
from pipeline.models.file import ModelSpec
from pipeline.oci.estargz import LayerFile, LayerResult
from pipeline.oci.format import FORMAT_ANNOTATION, FORMAT_VERSION
from pipeline.oci.image import (
    ANNOTATION_EXCLUDE,
    ANNOTATION_INCLUDE,
    ANNOTATION_REVISION,
    DEFAULT_PLATFORMS,
    Descriptor,
    ImageMetadata,
    Platform,
)
from pipeline.oci.references import reachable
from pipeline.store import Store

log = logging.getLogger(__name__)
MODEL_CARD = "README.md"
MODEL_CARD_LIMIT = 16 * 1024 * 1024  # a streamed card is held in memory: larger ones are left out of the catalog
Phase = Literal["download", "build"]
Download = Literal["stream", "cache"]


class Progress(Protocol):
    """Where the batch reports progress (the CLI draws bars; tests record)."""

    def phase(self, model: ModelSpec, phase: Phase, total: int) -> Callable[[int], None]:
        """A phase starts with ``total`` bytes to go; the returned function receives bytes as they are done."""
        ...

    def done(self, outcome: ModelOutcome) -> None: ...


@dataclass(frozen=True)
class BatchOptions:
    cache_dir: Path  # huggingface_hub cache for downloads
    force: bool = False  # rebuild even when the store is up to date
    keep_cache: bool = False  # keep downloads after building (faster rebuilds, more disk)
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS
    threads: int | None = None
    download: Download = "cache"  # "stream": from the Hub straight into the layer, cache_dir unused
    stream: StreamOptions = field(default_factory=StreamOptions)


@dataclass(frozen=True)
class ModelOutcome:
    model: ModelSpec
    status: Literal["built", "skipped", "failed"]
    detail: str  # the index digest, or why it was skipped or failed
    seconds: float = 0.0
    size: int = 0  # content bytes built
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


def build_models(
    models: Sequence[ModelSpec], store: Store, hub: HubClient, options: BatchOptions, progress: Progress | None = None
) -> list[ModelOutcome]:
    """Build every model; the outcome of each, in order."""
    outcomes = []
    for model in models:
        started = time.monotonic()
        try:
            with model_lock(options.cache_dir, model.repository):  # another build of it may share the cache
                outcome = build_model(model, store, hub, options, progress)
        except ModelyardError as err:
            outcome = ModelOutcome(model, "failed", str(err), time.monotonic() - started)
        except Exception as err:  # a bug, or the machine: that model failed, the others still build
            log.error("building %s failed unexpectedly", model.repository, exc_info=err)
            detail = f"unexpected {type(err).__name__}: {err} (the traceback is in the log)"
            outcome = ModelOutcome(model, "failed", detail, time.monotonic() - started)
        _record_outcome(store, outcome)
        if progress is not None:
            progress.done(outcome)
        outcomes.append(outcome)
    return outcomes


def failure_record(model: ModelSpec, error: str, failed_at: float) -> dict[str, Any]:
    """What the store keeps about a model's last failed build (``Store.put_failure``)."""
    return {
        "name": model.repository,
        "hf_id": model.hf_id,
        "revision": model.revision,
        "tag": model.tag,
        "error": error,
        "failed_at": int(failed_at),
        "format_version": FORMAT_VERSION,
    }


def _record_outcome(store: Store, outcome: ModelOutcome) -> None:
    """Keep the failure record of a model that failed; drop it once that same entry is published.

    Variants of one repository (entries with other ``tagAs``) share its record key: one that is up to
    date must not erase another's failure. A store that cannot take the record (it may be why the
    build failed) is logged, not raised: the outcome is reported either way.
    """
    model = outcome.model
    name = model.repository
    try:
        if outcome.status == "failed":
            store.put_failure(name, failure_record(model, outcome.detail, time.time()))
        elif (recorded := store.get_failure(name)) is not None and recorded.get("tag") == model.tag:
            store.delete_failure(name)
    except ModelyardError as err:
        log.warning("could not record the outcome of %s in the store: %s", name, err)


def build_model(
    model: ModelSpec, store: Store, hub: HubClient, options: BatchOptions, progress: Progress | None = None
) -> ModelOutcome:
    """Build and publish one model, or skip it when the store already has it."""
    started = time.monotonic()
    name = model.repository
    if not options.force:
        published = published_image(store, model)
        moved = retag(store, name, model.tags, published) if published is not None else None
        if published is not None and moved is not None:
            detail = f"up to date; tag {', '.join(moved)} moved to {published.digest}" if moved else "up to date"
            return ModelOutcome(model, "skipped", detail)

    timings: dict[str, float] = {}
    clock = time.monotonic()
    snapshot = hub.snapshot(model.hf_id, model.revision)
    files = [f for f in snapshot.files if model.wants(f.path)]
    if not files:
        raise ModelyardError(f"{model.source}: include/exclude leave none of the {len(snapshot.files)} files")
    timings["list"] = time.monotonic() - clock

    if options.download == "stream":
        built = _build_streamed(model, store, hub, options, snapshot, files, progress, timings)
        return ModelOutcome(
            model, "built", built.index.digest, time.monotonic() - started, built.content_bytes, timings
        )

    cache_dir = options.cache_dir
    total = sum(f.size for f in files)
    try:
        clock = time.monotonic()
        on_download = progress.phase(model, "download", total) if progress else None
        paths = hub.download(snapshot, files, cache_dir, on_download)
        check_git_blob_ids(files, paths, model=snapshot.hf_id)
        model_card = _model_card(hub, snapshot, paths, cache_dir)
        timings["download"] = time.monotonic() - clock

        clock = time.monotonic()
        on_build = progress.phase(model, "build", total) if progress else None
        layer_files = [LayerFile(f.path, f.size, opener(paths[f.path])) for f in files]
        built = _publish(store, model, options, snapshot, files, layer_files, on_build, model_card)
        timings["build"] = time.monotonic() - clock
    except IntegrityError:
        _forget_download(cache_dir, snapshot)  # never reuse a corrupt file from the cache
        raise
    finally:
        if not options.keep_cache:
            _forget_download(cache_dir, snapshot)
    return ModelOutcome(model, "built", built.index.digest, time.monotonic() - started, built.content_bytes, timings)


def published_image(store: Store, model: ModelSpec) -> Descriptor | None:
    """The image the model's tag points at, if everything its publish writes is in the store.

    That is: the index, with this revision, file selection and format version, every manifest,
    config and layer it references, and a catalog record of this revision and format version. A
    build killed between its tags and its record is then built again (to the same digests), and
    the record written.
    """
    descriptor = store.get_tag(model.repository, model.tag)
    if descriptor is None or not store.has_blob(descriptor.digest):
        return None
    published = store.read_json_blob(descriptor.digest).get("annotations") or {}
    wanted = ImageMetadata(title="", revision=model.revision, include=model.include, exclude=model.exclude)
    expected = wanted.annotations()
    keys = (FORMAT_ANNOTATION, ANNOTATION_REVISION, ANNOTATION_INCLUDE, ANNOTATION_EXCLUDE)
    if any(published.get(key) != expected.get(key) for key in keys):
        return None  # another revision, selection or format version: rebuild
    try:
        if not all(store.has_blob(digest) for digest in {d.digest for d in reachable(store, descriptor)}):
            return None
    except NotFoundError:
        return None  # a manifest is missing
    # One record per repository: variants of a revision share it, so it must be of this revision.
    record = store.get_catalog(model.repository) or {}
    if record.get("revision") != model.revision or record.get("format_version") != FORMAT_VERSION:
        return None
    return descriptor


def _build_streamed(
    model: ModelSpec,
    store: Store,
    hub: HubClient,
    options: BatchOptions,
    snapshot: RepoSnapshot,
    files: Sequence[RepoFile],
    progress: Progress | None,
    timings: dict[str, float],
) -> BuiltImage:
    """Build from the Hub straight into the store: the download and the build are one pass."""
    clock = time.monotonic()
    total = sum(f.size for f in files)
    on_download = progress.phase(model, "download", total) if progress else None
    on_build = progress.phase(model, "build", total) if progress else None
    with HubStream(hub, snapshot, files, options=options.stream, on_bytes=on_download) as stream:
        model_card = _streamed_model_card(stream, snapshot)
        built = _publish(store, model, options, snapshot, files, stream.layer_files(), on_build, model_card)
    timings["stream"] = time.monotonic() - clock
    return built


def _publish(
    store: Store,
    model: ModelSpec,
    options: BatchOptions,
    snapshot: RepoSnapshot,
    files: Sequence[RepoFile],
    layer_files: Sequence[LayerFile],
    on_build: Callable[[int], None] | None,
    model_card: str,
) -> BuiltImage:
    return build_and_publish(
        store,
        layer_files,
        name=model.repository,
        tags=model.tags,
        metadata=ImageMetadata(
            title=model.hf_id,
            source=snapshot.source_url,
            revision=model.revision,
            licenses=snapshot.license,
            created=source_date_epoch(),
            include=model.include,
            exclude=model.exclude,
        ),
        platforms=options.platforms,
        threads=options.threads,
        on_progress=on_build,
        check_layer=_lfs_check(files, snapshot.hf_id),
        check_file=lfs_file_check(files, model=snapshot.hf_id),  # a bad file stops the upload at its end
        catalog={**snapshot.metadata(), "model_card": model_card},
    )


def _lfs_check(files: Sequence[RepoFile], hf_id: str) -> Callable[[LayerResult], None]:
    def check(layer: LayerResult) -> None:
        check_lfs_digests(files, layer.files, model=hf_id)

    return check


def _model_card(hub: HubClient, snapshot: RepoSnapshot, paths: dict[str, Path], cache_dir: Path) -> str:
    """The model card text for the catalog, also when include/exclude kept it out of the image."""
    if MODEL_CARD not in paths:
        card = [f for f in snapshot.files if f.path == MODEL_CARD]
        if not card:
            return ""
        try:
            paths = hub.download(snapshot, card, cache_dir)
            check_git_blob_ids(card, paths, model=snapshot.hf_id)
        except (HubError, IntegrityError) as err:
            log.warning("no model card for %s: %s", snapshot.hf_id, err)
            return ""
    return paths[MODEL_CARD].read_text(encoding="utf-8", errors="replace")


def _streamed_model_card(stream: HubStream, snapshot: RepoSnapshot) -> str:
    """The model card text for the catalog, read from the Hub into memory (also when not in the image)."""
    card = next((f for f in snapshot.files if f.path == MODEL_CARD), None)
    if card is None or card.size > MODEL_CARD_LIMIT:
        return ""
    try:
        return stream.read(card).decode("utf-8", errors="replace")
    except (HubError, IntegrityError) as err:
        log.warning("no model card for %s: %s", snapshot.hf_id, err)
        return ""


def _forget_download(cache_dir: Path, snapshot: RepoSnapshot) -> None:
    """Remove a model's files from the huggingface_hub cache."""
    shutil.rmtree(cache_dir / repo_folder_name(repo_id=snapshot.hf_id, repo_type="model"), ignore_errors=True)
