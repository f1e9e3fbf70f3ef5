"""``modelyard validate`` and ``modelyard build``: check the models file, build images into the store."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.filesize import decimal
from rich.progress import Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from pipeline.build.batch import BatchOptions, Download, ModelOutcome, Phase, build_models
from pipeline.build.publish import BuiltImage, build_and_publish, source_date_epoch
from pipeline.build.report import write_report
from pipeline.build.source import files_from_dir
from pipeline.cli.console import (
    DEFAULT_MODELS_FILE,
    FORMATTER,
    add_store_option,
    byte_progress,
    err,
    megabytes_per_second,
    out,
)
from pipeline.cli.plan import preview_build
from pipeline.cli.site import refresh_site
from pipeline.errors import InvalidNameError, ModelsFileError, ModelyardError
from pipeline.github import problem_annotation
from pipeline.hub.client import DEFAULT_TIMEOUT, HubClient
from pipeline.hub.stream import MiB, StreamOptions
from pipeline.models.file import ModelSpec, load_models, select_models
from pipeline.names import repository_name
from pipeline.oci.format import FORMAT_DESCRIPTION
from pipeline.oci.image import DEFAULT_PLATFORMS, ImageMetadata, Platform
from pipeline.store import LocalBackend, Store, open_store
from pipeline.store.gc import sweep_uploads

DEFAULT_CACHE_DIR = "~/.cache/modelyard/hub"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = commands.add_parser(
        "validate",
        help="check a models.yaml file",
        formatter_class=FORMATTER,
        description="Check models.yaml and report every problem with file:line and field.\n"
        "Exit status 0 only when the file is valid.",
        epilog=f"Examples:\n  modelyard validate {DEFAULT_MODELS_FILE}\n"
        f"  modelyard validate --format github {DEFAULT_MODELS_FILE}    # in a workflow: annotations on the PR",
    )
    validate.add_argument("file", nargs="?", default=DEFAULT_MODELS_FILE, help=f"default: {DEFAULT_MODELS_FILE}")
    validate.add_argument(
        "--format",
        choices=("text", "github"),
        default="text",
        help="github: each problem as a GitHub Actions annotation on its line of the file, on stdout",
    )
    validate.set_defaults(run=cmd_validate)

    build = commands.add_parser(
        "build",
        help="build images into the store",
        formatter_class=FORMATTER,
        description="Build reproducible single-layer eStargz images and publish them to the store.\n\n"
        "From models.yaml (the default): for each model, download the pinned revision from the Hugging Face\n"
        "Hub, verify every file against the Hub's digests, stream the layer into the store, and publish the\n"
        "image with two tags: its tagAs and the 40-hex revision. Models already published at that revision\n"
        "and format are skipped without downloading. One failing model does not stop the others.\n"
        "Name the models with --only, or take the whole file with --all. Before downloading anything, the\n"
        "build shows its plan (as `modelyard plan` does), the bytes to download and store, and the free\n"
        "disk, and refuses a plan that cannot fit.\n\n"
        "How files come from the Hub (--download):\n"
        "  stream  straight into the layer, verified as they pass: no disk at all, the download overlapped\n"
        "          with the build, memory bounded (--connections x 8 MiB). A model larger than the disk\n"
        "          (a 14 GB CI runner, say) must use it. The default when the store is a bucket.\n"
        "  cache   into --cache-dir first, then build: disk for the model once, plus the layer in a local\n"
        "          store; --keep-cache makes rebuilds need no network. The default for a local store.\n\n"
        "From a local directory (--from-dir): one image, tagged as --tag says.",
        epilog="Examples:\n"
        "  modelyard build --all                             # every model in models/models.yaml\n"
        "  modelyard build --only sentence-transformers/all-MiniLM-L6-v2 --store s3://models/prod\n"
        "  modelyard build --only gpt2 --download stream      # no download cache, whatever the model's size\n"
        "  modelyard build --from-dir ./my-model --name my-org/my-model --tag v1\n\n"
        "Environment:\n"
        "  HF_ENDPOINT        the Hub to download from: a mirror or enterprise proxy (default https://huggingface.co)\n"
        "  HF_TOKEN           a token for gated and private models\n"
        "  SOURCE_DATE_EPOCH  every timestamp in the image (default 0, the Unix epoch)",
    )
    build.add_argument(
        "--models", default=DEFAULT_MODELS_FILE, metavar="FILE", help=f"models file (default: {DEFAULT_MODELS_FILE})"
    )
    which = build.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", metavar="NAME", help="build these models (HF id or repository name)")
    which.add_argument("--all", action="store_true", help="build every model of the models file")
    build.add_argument("--force", action="store_true", help="rebuild even when the store is up to date")
    build.add_argument(
        "--report", metavar="FILE", help="also write the outcomes as JSON (for `modelyard report`: a CI summary)"
    )
    build.add_argument(
        "--download",
        choices=("auto", "stream", "cache"),
        default="auto",
        help="stream from the Hub into the layer, or download into --cache-dir first "
        "(default auto: stream into a bucket, cache for a local store)",
    )
    build.add_argument(
        "--connections",
        type=int,
        default=StreamOptions.connections,
        metavar="N",
        help=f"with --download stream: ranged GETs in flight, {StreamOptions.segment_size // MiB} MiB each "
        f"(default: {StreamOptions.connections})",
    )
    build.add_argument("--keep-cache", action="store_true", help="keep downloaded files after building")
    build.add_argument(
        "--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR", help=f"download cache (default: {DEFAULT_CACHE_DIR})"
    )
    build.add_argument(
        "--retries", type=int, default=4, help="retries of a failed Hub request, with backoff (default: 4)"
    )
    build.add_argument(
        "--hub-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="a Hub request that gets no byte for S seconds has failed, and is retried (default: %(default)s)",
    )
    build.add_argument("--from-dir", metavar="DIR", help="build one image from a local directory instead")
    build.add_argument("--name", help="with --from-dir: repository name, e.g. org/model (lower-cased)")
    build.add_argument("--tag", action="append", help="with --from-dir: tag to publish (repeatable; default: latest)")
    build.add_argument("--revision", help="with --from-dir: source revision recorded in the image annotations")
    build.add_argument("--source", metavar="URL", help="with --from-dir: source URL recorded in the image annotations")
    _add_common_build_options(build)
    build.set_defaults(run=cmd_build)


def print_built(built: BuiltImage) -> None:
    rows = {
        "image": f"{built.name}:{', '.join(built.tags)}",
        "files": f"{len(built.layer.files)} ({built.content_bytes:,} bytes)",
        "layer": f"{built.layer.digest} ({built.layer.size:,} bytes)",
        "index": built.index.digest,
        "toc": built.layer.toc_digest,
        "diff id": built.layer.diff_id,
        **{f.name: f"{f.descriptor.digest} ({built.name}:{built.tags[0]}-{f.name})" for f in built.formats},
        "time": f"{built.seconds:.1f} s, {megabytes_per_second(built.content_bytes, built.seconds)}",
    }
    for key, value in rows.items():
        out.print(f"{key:<8} {value}")


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        models = load_models(args.file)
    except ModelsFileError as error:
        if args.format != "github":
            raise
        for problem in error.problems:
            print(problem_annotation(problem))  # not rich: workflow commands must reach stdout verbatim
        err.print(f"{len(error.problems)} problem(s) found", markup=False)
        return 1
    out.print(f"{args.file}: {len(models)} models, valid")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.from_dir is not None:
        return build_from_dir(args)
    if args.name or args.revision or args.source:
        raise ModelyardError("--name, --revision and --source go with --from-dir")
    listed = load_models(args.models)
    if not args.only and not args.all:
        raise ModelyardError(
            f"which models? Name them with --only NAME..., or build all {len(listed)} of {args.models} with --all "
            "(`modelyard plan` shows what that would download)"
        )
    models = select_models(listed, args.only or [])
    store = open_store(args.store)
    download = download_mode(args.download, store)
    if download == "stream" and args.keep_cache:
        raise ModelyardError("--keep-cache needs a cache: add --download cache (streaming uses no disk)")
    if args.connections < 1:
        raise ModelyardError(f"--connections must be at least 1, got {args.connections}")
    sweep_stale_uploads(store)
    options = BatchOptions(
        cache_dir=Path(args.cache_dir).expanduser(),
        force=args.force,
        keep_cache=args.keep_cache,
        platforms=args.platform or DEFAULT_PLATFORMS,
        threads=args.threads,
        download=download,
        stream=StreamOptions(connections=args.connections),
    )
    hub = HubClient(retries=args.retries, timeout=args.hub_timeout)
    preview_build(models, store, options)  # before anything is downloaded; refuses what cannot fit
    how = "streaming" if download == "stream" else f"downloading into {options.cache_dir}"
    err.print(
        f"building {len(models)} model(s) from {args.models} into {store.backend.url()}, {how} from {hub.endpoint}"
    )
    with BatchProgress() as progress:
        outcomes = build_models(models, store, hub, options, progress)
    print_outcomes(outcomes)
    if args.report:
        write_report(Path(args.report), outcomes)
    refresh_site(store, args.models)  # the site never lags the registry
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def download_mode(requested: str, store: Store) -> Download:
    """``--download auto``: stream into a bucket (no disk needed), download into the cache for a local store."""
    if requested == "auto":
        return "cache" if isinstance(store.backend, LocalBackend) else "stream"
    return "stream" if requested == "stream" else "cache"


def sweep_stale_uploads(store: Store) -> None:
    """Remove the temporaries killed builds left in the store (a stopped layer upload is model-sized)."""
    removed = sweep_uploads(store)
    if removed:
        size = sum(info.size for info in removed)
        err.print(f"removed {len(removed)} upload temporaries left by killed builds ({size:,} bytes)")


class BatchProgress:
    """One bar per model that shows both its download and its build, and a line per finished model.

    The bar's dim part is what has been downloaded, its bright part what has been built: when
    streaming they advance together; from the cache, the download fills it first, then the build.
    """

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<50}"),
            DownloadAndBuildBar(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._done: dict[str, dict[Phase, int]] = {}

    def __enter__(self) -> BatchProgress:
        self.bars.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.bars.stop()

    def phase(self, model: ModelSpec, phase: Phase, total: int) -> Callable[[int], None]:
        name = model.repository
        if name not in self._tasks:
            self._done[name] = {"download": 0, "build": 0}
            # completed = downloaded + built, over twice the size: the time left counts both passes
            self._tasks[name] = self.bars.add_task(name, total=2 * total, size=total, counts="")
        task, done = self._tasks[name], self._done[name]

        def advance(count: int) -> None:
            done[phase] += count
            counts = f"{decimal(done['download'])} downloaded, {decimal(done['build'])} of {decimal(total)} built"
            self.bars.update(task, advance=count, counts=counts, download=done["download"], build=done["build"])

        return advance

    def done(self, outcome: ModelOutcome) -> None:
        task = self._tasks.pop(outcome.model.repository, None)
        if task is not None:
            self.bars.remove_task(task)
        mark = {"built": "built  ", "skipped": "skipped", "failed": "FAILED "}[outcome.status]
        timings = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in outcome.timings.items())
        suffix = f" ({timings})" if timings else ""
        err.print(f"{mark} {outcome.model.repository}: {outcome.detail}{suffix}", markup=False)


class DownloadAndBuildBar(ProgressColumn):
    """A bar in two shades: downloaded bytes (dim) and built bytes (bright) of the task's ``size``."""

    WIDTH = 40

    def render(self, task: Task) -> Text:
        size = max(int(task.fields.get("size", 0)), 1)
        built = min(self.WIDTH, self.WIDTH * int(task.fields.get("build", 0)) // size)
        downloaded = max(built, min(self.WIDTH, self.WIDTH * int(task.fields.get("download", 0)) // size))
        bar = Text()
        bar.append("━" * built, style="bar.complete")
        bar.append("━" * (downloaded - built), style="cyan")
        bar.append("━" * (self.WIDTH - downloaded), style="bar.back")
        return bar


def print_outcomes(outcomes: list[ModelOutcome]) -> None:
    table = Table(title="modelyard build", title_justify="left")
    for column in ("model", "result", "size", "seconds", "MB/s", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column in ("size", "seconds", "MB/s") else "left")
    for outcome in outcomes:
        rate = megabytes_per_second(outcome.size, outcome.seconds) if outcome.size else ""
        table.add_row(
            outcome.model.repository,
            outcome.status,
            f"{outcome.size / 1e6:,.1f} MB" if outcome.size else "",
            f"{outcome.seconds:.1f}",
            rate.removesuffix(" MB/s"),
            outcome.detail,
        )
    out.print(table)
    counts = {status: sum(o.status == status for o in outcomes) for status in ("built", "skipped", "failed")}
    out.print(", ".join(f"{count} {status}" for status, count in counts.items()))


def build_from_dir(args: argparse.Namespace) -> int:
    if args.name is None:
        raise ModelyardError("--from-dir needs --name org/model (the repository name in the store)")
    store = open_store(args.store)
    sweep_stale_uploads(store)
    name = repository_name(args.name)
    files = files_from_dir(args.from_dir)
    total = sum(f.size for f in files)
    metadata = ImageMetadata(
        title=args.name, source=args.source or "", revision=args.revision or "", created=source_date_epoch()
    )
    err.print(f"building {name} from {args.from_dir}: {len(files)} files, {total:,} bytes, {FORMAT_DESCRIPTION}")
    with byte_progress(f"build {name}", total) as progress:
        task = progress.task_ids[0]
        built = build_and_publish(
            store,
            files,
            name=name,
            tags=args.tag or ["latest"],
            metadata=metadata,
            platforms=args.platform or DEFAULT_PLATFORMS,
            threads=args.threads,
            on_progress=lambda n: progress.advance(task, n),
        )
    print_built(built)
    out.print(f"stored in {store.backend.url()}")
    refresh_site(store, DEFAULT_MODELS_FILE, explicit=False)
    return 0


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except InvalidNameError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _add_common_build_options(command: argparse.ArgumentParser) -> None:
    add_store_option(command)
    command.add_argument(
        "--platform",
        action="append",
        type=_platform,
        help="os/arch to list in the image index (repeatable; default: linux/amd64 and linux/arm64)",
    )
    command.add_argument("--threads", type=int, help="compression threads (default: CPU count; output is identical)")
