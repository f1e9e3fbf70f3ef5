"""``modelyard changes``: what a change to the models file builds on merge, with download sizes."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

from pipeline.cli.console import DEFAULT_MODELS_FILE, FORMATTER, err, out
from pipeline.errors import HubError
from pipeline.github import markdown_table, size_text
from pipeline.hub.client import CANONICAL_URL, HubClient
from pipeline.models.diff import EntryChange, changed_entries
from pipeline.models.file import load_models

LOOKUP_THREADS = 8


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    changes = commands.add_parser(
        "changes",
        help="what a change to the models file builds on merge, with download sizes",
        formatter_class=FORMATTER,
        description="Compare the models file with an earlier version of it (the pull request's base) image by\n"
        "image (repository and tag): entries added, moved to another revision, given another file selection,\n"
        "or removed. For the entries a merge builds, the Hub lists the pinned revision: its download size, or\n"
        "why it cannot be built (a revision that does not exist, a gated repository). No store is read, so\n"
        "no credential is needed: a fork's pull request can run it.",
        epilog="Examples:\n"
        "  git show main:models/models.yaml > /tmp/base.yaml && modelyard changes --base /tmp/base.yaml\n"
        '  modelyard changes --base /tmp/base.yaml --format markdown >> "$GITHUB_STEP_SUMMARY"',
    )
    changes.add_argument("--base", required=True, metavar="FILE", help="the models file to compare with")
    changes.add_argument(
        "--models", default=DEFAULT_MODELS_FILE, metavar="FILE", help=f"models file (default: {DEFAULT_MODELS_FILE})"
    )
    changes.add_argument("--format", choices=("text", "markdown"), default="text", help="output (default: text)")
    changes.add_argument("--offline", action="store_true", help="do not ask the Hub for sizes")
    changes.set_defaults(run=cmd_changes)


def cmd_changes(args: argparse.Namespace) -> int:
    changes = changed_entries(load_models(args.base), load_models(args.models))
    hub = None if args.offline else HubClient(retries=1)
    sizes = download_sizes(changes, hub) if hub is not None else {}
    if args.format == "markdown":
        print(markdown_changes(changes, sizes, args.base))  # not rich: Markdown must reach stdout verbatim
        return 0
    for change in changes:
        image = f"{change.model.repository}:{change.model.tag}"
        out.print(f"{change.kind:<9} {image}  {change.describe()}  {sizes.get(change, '')}".rstrip(), markup=False)
    out.print(summary(changes, sizes), markup=False)
    return 0


def download_sizes(changes: list[EntryChange], hub: HubClient) -> dict[EntryChange, str]:
    """``548.1 MB (12 files)``, or why the size is unknown, for each change that builds."""

    def size(change: EntryChange) -> str:
        model = change.model
        try:
            files = [f for f in hub.list_files(model.hf_id, model.revision) if model.wants(f.path)]
        except HubError as error:
            return f"cannot be built: {error}"
        if not files:
            return "cannot be built: include/exclude keep none of its files"
        return f"{size_text(sum(f.size for f in files))} ({len(files)} files)"

    building = [change for change in changes if change.builds]
    if building:
        err.print(f"asking {hub.endpoint} for the files of {len(building)} revision(s)", markup=False)
    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="changes-hub") as pool:
        return dict(zip(building, pool.map(size, building), strict=True))


def summary(changes: list[EntryChange], sizes: dict[EntryChange, str]) -> str:
    building = [c for c in changes if c.builds]
    broken = sum(sizes.get(c, "").startswith("cannot") for c in building)
    text = f"{len(building)} image(s) build on merge"
    if broken:
        text += f" ({broken} cannot be built as pinned)"
    removed = len(changes) - len(building)
    return text + (f"; {removed} removed from the file (published images stay)" if removed else "")


def markdown_changes(changes: list[EntryChange], sizes: dict[EntryChange, str], base: str) -> str:
    lines = ["## What this change builds", "", summary(changes, sizes) + "."]
    if changes:
        rows = [
            [
                f"[{c.model.hf_id}]({CANONICAL_URL}/{c.model.hf_id}/tree/{c.model.revision})",
                c.model.tag,
                c.describe(),
                c.model.source,
                sizes.get(c, "") if c.builds else "",
            ]
            for c in changes
        ]
        lines += ["", markdown_table(["model", "tag", "change", "entry", "download"], rows, align="lllll")]
    lines += [
        "",
        f"Compared with `{base}` image by image; the store is not read here (pull requests get no secrets), so "
        "a merge also rebuilds models whose last build failed or whose format version is older.",
    ]
    return "\n".join(lines)
