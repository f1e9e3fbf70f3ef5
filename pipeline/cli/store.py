"""``modelyard gc``, ``export-oci-layout`` and ``push``: look after the store and copy images out of it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli.console import FORMATTER, add_store_option, byte_progress, duration, err, out
from pipeline.github import markdown_table
from pipeline.names import repository_name
from pipeline.oci.image import MANIFEST_MEDIA_TYPES, Descriptor
from pipeline.oci.layout import export_oci_layout
from pipeline.oci.references import reachable
from pipeline.remote.push import push_images
from pipeline.store import Store, open_store
from pipeline.store.gc import DEFAULT_GRACE, GcReport, collect_garbage

GC_TABLE_ROWS = 100  # a job summary holds at most 1 MiB


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export-oci-layout",
        help="copy an image from the store to an OCI layout directory",
        formatter_class=FORMATTER,
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
        formatter_class=FORMATTER,
        description="Garbage-collect the store: mark every blob reachable from a tag or a catalog record, then\n"
        "remove the others, and temporaries of killed uploads, once older than the grace period. The grace\n"
        "period keeps the blobs of a build running at the same time, published before its tags.",
        epilog="Examples:\n  modelyard gc --dry-run\n  modelyard gc --store s3://models/prod --grace 48h",
    )
    add_store_option(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="markdown: the summary and a table of what goes, on stdout (a CI job summary)",
    )
    gc.add_argument(
        "--grace", type=duration, default=DEFAULT_GRACE, metavar="DURATION", help="keep anything younger (default: 24h)"
    )
    gc.set_defaults(run=cmd_gc)

    push = commands.add_parser(
        "push",
        help="copy images to another OCI registry, digests intact",
        formatter_class=FORMATTER,
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


def cmd_export_oci_layout(args: argparse.Namespace) -> int:
    store = open_store(args.store, existing=True)
    name, _, tag = args.image.partition(":")
    tag = tag or "latest"
    started = time.monotonic()
    root = export_oci_layout(store, repository_name(name), tag, Path(args.directory))
    out.print(f"exported {name}:{tag} ({root.digest}) to {args.directory} in {time.monotonic() - started:.1f} s")
    out.print(f"try: skopeo inspect oci:{args.directory}:{tag}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    store = open_store(args.store, existing=True)
    report = collect_garbage(store, grace=args.grace, dry_run=args.dry_run)
    if args.format == "markdown":
        print(gc_markdown(store.backend.url(), report, args.grace))  # not rich: Markdown reaches stdout verbatim
        return 0
    for info in report.removed:
        err.print(f"{'would remove' if args.dry_run else 'removed'} {info.key} ({info.size:,} bytes)", markup=False)
    out.print(f"{store.backend.url()}: {report.summary()}")
    return 0


def gc_markdown(url: str, report: GcReport, grace: float, rows: int = GC_TABLE_ROWS) -> str:
    """What gc removed (or would): the summary, then the largest objects first."""
    title = "modelyard gc --dry-run" if report.dry_run else "modelyard gc"
    lines = [f"## {title}", "", f"`{url}` (grace {grace / 3600:g} h): {report.summary()}."]
    biggest = sorted(report.removed, key=lambda info: (-info.size, info.key))
    if biggest:
        now = time.time()
        table = [[f"`{i.key}`", f"{i.size:,}", f"{(now - i.modified) / 3600:,.0f} h"] for i in biggest[:rows]]
        lines += ["", markdown_table(["object", "bytes", "age"], table, align="lrr")]
        if len(biggest) > rows:
            lines += ["", f"... and {len(biggest) - rows} more ({sum(i.size for i in biggest[rows:]):,} bytes)."]
    return "\n".join(lines)


def cmd_push(args: argparse.Namespace) -> int:
    store = open_store(args.store, existing=True)
    names = [repository_name(name) for name in args.only] if args.only else store.repositories()
    total = sum(d.size for d in _layer_descriptors(store, names))  # virtual blobs too: push materializes them
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
