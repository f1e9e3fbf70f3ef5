"""The ``modelyard`` command line.

Every subcommand's ``--help`` explains it with an example. Errors that modelyard diagnoses print as
``error: ...`` lines and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pipeline import __version__
from pipeline.batch import BatchOptions, ModelOutcome, Phase, build_models
from pipeline.build import BuiltImage, build_and_publish, source_date_epoch
from pipeline.errors import InvalidNameError, ModelsFileError, ModelyardError
from pipeline.format import FORMAT_DESCRIPTION
from pipeline.gc import DEFAULT_GRACE, collect_garbage
from pipeline.hub import HubClient
from pipeline.image import DEFAULT_PLATFORMS, MANIFEST_MEDIA_TYPES, Descriptor, ImageMetadata, Platform
from pipeline.modelsfile import ModelSpec, load_models
from pipeline.names import repository_name
from pipeline.oci_layout import export_oci_layout
from pipeline.push import push_images
from pipeline.references import reachable
from pipeline.source import files_from_dir
from pipeline.store import DEFAULT_STORE, STORE_HELP, Store, open_store
from worker import cli as serve

DEFAULT_MODELS_FILE = "models/models.yaml"
DEFAULT_CACHE_DIR = "~/.cache/modelyard/hub"

# Piped output (CI logs) gets a wide page rather than rich's 80 columns, so digests stay on one line.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


def byte_progress(description: str, total: int) -> Progress:
    """A progress bar over bytes, with rate and time left, on stderr."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    progress.add_task(description, total=total)
    return progress


def megabytes_per_second(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 1e-9) / 1e6:.0f} MB/s"


def print_built(built: BuiltImage) -> None:
    rows = {
        "image": f"{built.name}:{', '.join(built.tags)}",
        "files": f"{len(built.layer.files)} ({built.content_bytes:,} bytes)",
        "layer": f"{built.layer.digest} ({built.layer.size:,} bytes)",
        "index": built.index.digest,
        "toc": built.layer.toc_digest,
        "diff id": built.layer.diff_id,
        "time": f"{built.seconds:.1f} s, {megabytes_per_second(built.content_bytes, built.seconds)}",
    }
    for key, value in rows.items():
        out.print(f"{key:<8} {value}")


# subcommands


def cmd_validate(args: argparse.Namespace) -> int:
    models = load_models(args.file)
    out.print(f"{args.file}: {len(models)} models, valid")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.from_dir is not None:
        return build_from_dir(args)
    if args.name or args.revision or args.source:
        raise ModelyardError("--name, --revision and --source go with --from-dir")
    models = select_models(load_models(args.models), args.only or [])
    store = open_store(args.store)
    options = BatchOptions(
        cache_dir=Path(args.cache_dir).expanduser(),
        force=args.force,
        keep_cache=args.keep_cache,
        platforms=args.platform or DEFAULT_PLATFORMS,
        threads=args.threads,
    )
    hub = HubClient(retries=args.retries)
    err.print(f"building {len(models)} model(s) from {args.models} into {store.backend.url()} via {hub.endpoint}")
    with BatchProgress() as progress:
        outcomes = build_models(models, store, hub, options, progress)
    print_outcomes(outcomes)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def select_models(models: list[ModelSpec], only: list[str]) -> list[ModelSpec]:
    """The models named by --only (HF id or repository name, any case), or all of them."""
    if not only:
        return models
    wanted = {name.lower() for name in only}
    chosen = [m for m in models if m.hf_id.lower() in wanted or m.repository in wanted]
    unknown = wanted - {m.hf_id.lower() for m in chosen} - {m.repository for m in chosen}
    if unknown:
        raise ModelyardError(f"--only: not in the models file: {', '.join(sorted(unknown))}")
    return chosen


class BatchProgress:
    """Progress bars per model and phase (download, build), and a line per finished model."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<50}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._tasks: list[TaskID] = []

    def __enter__(self) -> BatchProgress:
        self.bars.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.bars.stop()

    def phase(self, model: ModelSpec, phase: Phase, total: int) -> Callable[[int], None]:
        task = self.bars.add_task(f"{phase:<8} {model.repository}", total=total)
        self._tasks.append(task)

        def advance(count: int) -> None:
            self.bars.advance(task, count)

        return advance

    def done(self, outcome: ModelOutcome) -> None:
        for task in self._tasks:
            self.bars.remove_task(task)
        self._tasks.clear()
        mark = {"built": "built  ", "skipped": "skipped", "failed": "FAILED "}[outcome.status]
        timings = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in outcome.timings.items())
        suffix = f" ({timings})" if timings else ""
        err.print(f"{mark} {outcome.model.repository}: {outcome.detail}{suffix}", markup=False)


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
    return 0


def cmd_export_oci_layout(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    name, _, tag = args.image.partition(":")
    tag = tag or "latest"
    started = time.monotonic()
    root = export_oci_layout(store, repository_name(name), tag, Path(args.directory))
    out.print(f"exported {name}:{tag} ({root.digest}) to {args.directory} in {time.monotonic() - started:.1f} s")
    out.print(f"try: skopeo inspect oci:{args.directory}:{tag}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    report = collect_garbage(store, grace=args.grace, dry_run=args.dry_run)
    for info in report.removed:
        err.print(f"{'would remove' if args.dry_run else 'removed'} {info.key} ({info.size:,} bytes)", markup=False)
    out.print(f"{store.backend.url()}: {report.summary()}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    names = [repository_name(name) for name in args.only] if args.only else store.repositories()
    total = sum(store.blob_size(d.digest) or 0 for d in _layer_descriptors(store, names))
    with byte_progress(f"push to {args.to}", total) as progress:
        task = progress.task_ids[0]
        outcomes = push_images(
            store, args.to, names=names, insecure=args.insecure, on_bytes=lambda n: progress.advance(task, n)
        )
    for outcome in outcomes:
        out.print(
            f"pushed {args.to.rstrip('/')}/{outcome.name}:{','.join(outcome.tags)} {outcome.digest} "
            f"({outcome.uploaded:,} bytes sent, {outcome.skipped_blobs} blob(s) already there)"
        )
    return 0


def _layer_descriptors(store: Store, names: list[str]) -> list[Descriptor]:
    """The distinct blobs (not manifests) the tags of ``names`` reach, to size the progress bar."""
    seen: dict[str, Descriptor] = {}
    for name in names:
        for tag in store.tags(name):
            root = store.get_tag(name, tag)
            if root is not None:
                seen.update((d.digest, d) for d in reachable(store, root) if d.media_type not in MANIFEST_MEDIA_TYPES)
    return list(seen.values())


def duration(text: str) -> float:
    """Seconds from ``90s``, ``30m``, ``24h`` or ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return float(number) * units[unit]


# parser


def parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    root = argparse.ArgumentParser(
        prog="modelyard",
        formatter_class=formatter,
        description="Turn pinned Hugging Face models into reproducible, lazily-pullable OCI images.",
        epilog="Start with: modelyard build --from-dir ./my-model --name my-org/my-model\n"
        "Each subcommand has its own --help.",
    )
    root.add_argument("--version", action="version", version=f"modelyard {__version__}, format {FORMAT_DESCRIPTION}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a models.yaml file",
        formatter_class=formatter,
        description="Check models.yaml and report every problem with file:line and field.\n"
        "Exit status 0 only when the file is valid.",
        epilog=f"Example: modelyard validate {DEFAULT_MODELS_FILE}",
    )
    validate.add_argument("file", nargs="?", default=DEFAULT_MODELS_FILE, help=f"default: {DEFAULT_MODELS_FILE}")
    validate.set_defaults(run=cmd_validate)

    build = commands.add_parser(
        "build",
        help="build images into the store",
        formatter_class=formatter,
        description="Build reproducible single-layer eStargz images and publish them to the store.\n\n"
        "From models.yaml (the default): for each model, download the pinned revision from the Hugging Face\n"
        "Hub, verify every file against the Hub's digests, stream the layer into the store, and publish the\n"
        "image with two tags: its tagAs and the 40-hex revision. Models already published at that revision\n"
        "and format are skipped without downloading. One failing model does not stop the others.\n\n"
        "From a local directory (--from-dir): one image, tagged as --tag says.",
        epilog="Examples:\n"
        "  modelyard build                                   # every model in models/models.yaml\n"
        "  modelyard build --only sentence-transformers/all-MiniLM-L6-v2 --store s3://models/prod\n"
        "  modelyard build --from-dir ./my-model --name my-org/my-model --tag v1\n\n"
        "Environment:\n"
        "  HF_ENDPOINT        the Hub to download from: a mirror or enterprise proxy (default https://huggingface.co)\n"
        "  HF_TOKEN           a token for gated and private models\n"
        "  SOURCE_DATE_EPOCH  every timestamp in the image (default 0, the Unix epoch)",
    )
    build.add_argument(
        "--models", default=DEFAULT_MODELS_FILE, metavar="FILE", help=f"models file (default: {DEFAULT_MODELS_FILE})"
    )
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these models (HF id or repository name)")
    build.add_argument("--force", action="store_true", help="rebuild even when the store is up to date")
    build.add_argument("--keep-cache", action="store_true", help="keep downloaded files after building")
    build.add_argument(
        "--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR", help=f"download cache (default: {DEFAULT_CACHE_DIR})"
    )
    build.add_argument(
        "--retries", type=int, default=4, help="retries of a failed Hub request, with backoff (default: 4)"
    )
    build.add_argument("--from-dir", metavar="DIR", help="build one image from a local directory instead")
    build.add_argument("--name", help="with --from-dir: repository name, e.g. org/model (lower-cased)")
    build.add_argument("--tag", action="append", help="with --from-dir: tag to publish (repeatable; default: latest)")
    build.add_argument("--revision", help="with --from-dir: source revision recorded in the image annotations")
    build.add_argument("--source", metavar="URL", help="with --from-dir: source URL recorded in the image annotations")
    _add_common_build_options(build)
    build.set_defaults(run=cmd_build)

    export = commands.add_parser(
        "export-oci-layout",
        help="copy an image from the store to an OCI layout directory",
        formatter_class=formatter,
        description="Write an OCI image layout directory holding NAME[:TAG] and every blob it references,\n"
        "readable by skopeo, oras, crane and podman without a registry.",
        epilog="Example:\n  modelyard export-oci-layout my-org/my-model:latest ./oci\n"
        "  skopeo copy --all oci:./oci:latest dir:./copy",
    )
    export.add_argument("image", metavar="NAME[:TAG]")
    export.add_argument("directory", metavar="DIR")
    add_store_option(export)
    export.set_defaults(run=cmd_export_oci_layout)

    gc = commands.add_parser(
        "gc",
        help="remove blobs no tag reaches, and stale upload temporaries",
        formatter_class=formatter,
        description="Garbage-collect the store: mark every blob reachable from a tag or a catalog record, then\n"
        "remove the others, and temporaries of killed uploads, once older than the grace period. The grace\n"
        "period keeps the blobs of a build running at the same time, published before its tags.",
        epilog="Examples:\n  modelyard gc --dry-run\n  modelyard gc --store s3://models/prod --grace 48h",
    )
    add_store_option(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc.add_argument(
        "--grace", type=duration, default=DEFAULT_GRACE, metavar="DURATION", help="keep anything younger (default: 24h)"
    )
    gc.set_defaults(run=cmd_gc)

    push = commands.add_parser(
        "push",
        help="copy images to another OCI registry, digests intact",
        formatter_class=formatter,
        description="Copy published images (every tag) to any OCI registry: blobs, then manifests, then tags,\n"
        "byte for byte, so a digest means the same bytes everywhere. Blobs the registry has are skipped.\n"
        "Credentials come from the Docker config (docker login, credential helpers) or from\n"
        "REGISTRY_USERNAME and REGISTRY_PASSWORD.",
        epilog="Examples:\n  modelyard push --to ghcr.io/my-org/models\n"
        "  modelyard push --store s3://models/prod --to registry.example.com --only gpt2",
    )
    push.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="destination, e.g. ghcr.io/my-org")
    push.add_argument("--only", nargs="+", metavar="NAME", help="push only these repositories")
    add_store_option(push)
    push.add_argument("--insecure", action="store_true", help="plain HTTP (a registry on localhost)")
    push.set_defaults(run=cmd_push)

    serve.register(commands)
    return root


def add_store_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)


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


def keep_freed_buffers() -> None:
    """Ask glibc to keep freed multi-megabyte buffers for reuse instead of returning them to the OS.

    Every 4 MiB chunk allocates fresh buffers (the chunk read, its compressed member). By default glibc
    unmaps them on free, and the next chunk pays about a thousand page faults to map them again: a
    tenth of the build time (bench/layer.py). Live memory stays bounded by the writer's window.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keep_freed_buffers()
    try:
        return int(args.run(args))
    except ModelsFileError as error:
        for problem in error.problems:
            err.print(f"error: {problem}", markup=False)
        err.print(f"{len(error.problems)} problem(s) found", markup=False)
        return 1
    except ModelyardError as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted; nothing half-published remains (run again to continue)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
