"""``modelyard update``: move the pinned shas of models.yaml to their branches' current commits."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pipeline.cli.console import DEFAULT_MODELS_FILE, FORMATTER, err, out
from pipeline.github import markdown_table
from pipeline.hub.client import CANONICAL_URL, HubClient
from pipeline.models.file import load_models, select_models
from pipeline.models.update import LEFT, Change, UpdateReport, update_models_file


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = commands.add_parser(
        "update",
        help="move pinned shas to the Hub's current revisions",
        formatter_class=FORMATTER,
        description="Move each entry's sha to the commit its branch points at now on the Hugging Face Hub: the\n"
        "entry's 'branch', or the repository's default branch. Only the shas change: comments, order,\n"
        "quotes and layout of the file stay byte for byte. A gated, private or missing repository (or a\n"
        "missing branch) is reported and left as it is. Prints what moved; exit status 1 when a lookup failed\n"
        "(the moves that were found are written all the same).",
        epilog="Examples:\n"
        "  modelyard update                          # every entry of models/models.yaml\n"
        "  modelyard update --only gpt2 --dry-run    # where gpt2's default branch is, without writing\n"
        "  modelyard update --format markdown > bump.md   # a pull request body\n\n"
        "Environment:\n"
        "  HF_ENDPOINT  the Hub to ask (default https://huggingface.co)\n"
        "  HF_TOKEN     a token: private repositories are then found (and still left as they are)",
    )
    update.add_argument(
        "--models", default=DEFAULT_MODELS_FILE, metavar="FILE", help=f"models file (default: {DEFAULT_MODELS_FILE})"
    )
    update.add_argument("--only", nargs="+", metavar="NAME", help="update only these models (HF id or repository name)")
    update.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    update.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="text (default), or a Markdown report for a pull request body or a job summary",
    )
    update.add_argument(
        "--retries", type=int, default=4, help="retries of a failed Hub request, with backoff (default: 4)"
    )
    update.set_defaults(run=cmd_update)


def cmd_update(args: argparse.Namespace) -> int:
    models = load_models(args.models)
    only = select_models(models, args.only) if args.only else None
    hub = HubClient(retries=args.retries)
    total = len(only if only is not None else models)
    err.print(f"asking {hub.endpoint} where the branches of {total} model(s) in {args.models} are")
    progress = Progress(TextColumn("look up"), BarColumn(), MofNCompleteColumn(), console=err, transient=True)
    with progress:
        task = progress.add_task("look up", total=total)
        report = update_models_file(
            args.models, hub.head, only=only, dry_run=args.dry_run, on_done=lambda: progress.advance(task)
        )
    if args.format == "markdown":
        print(markdown_report(report))  # not rich: Markdown must reach stdout verbatim
    else:
        for change in report.changes:
            if change.status != "current":
                out.print(text_line(change), markup=False)
        out.print(f"{report.path}: {report.summary()}", markup=False)
        if report.moved:
            out.print(f"wrote {report.path}" if report.written else "dry run: nothing written", markup=False)
    return 1 if report.count("failed") else 0


def text_line(change: Change) -> str:
    model = change.model
    name = f"{model.hf_id} ({model.tag})"
    if change.status == "moved":
        return f"moved    {name}: {model.revision[:12]} -> {change.revision} ({change.branch}, {model.source})"
    verb = "failed  " if change.status == "failed" else f"{change.status:<8}"
    return f"{verb} {name}: left at {model.revision[:12]}: {change.detail}"


def markdown_report(report: UpdateReport) -> str:
    """What moved (with links to both commits on the Hub) and what was left, for a pull request body."""
    lines = [f"`modelyard update` on `{report.path}`: {report.summary()}."]
    if report.moved:
        rows = [
            [
                f"[{c.model.hf_id}]({CANONICAL_URL}/{c.model.hf_id})",
                c.model.tag,
                c.branch,
                _commit_link(c.model.hf_id, c.model.revision),
                _commit_link(c.model.hf_id, c.revision or ""),
            ]
            for c in report.moved
        ]
        lines += ["", "### Moved", "", markdown_table(["model", "tag", "branch", "from", "to"], rows)]
    left = [c for c in report.changes if c.status in LEFT or c.status == "failed"]
    if left:
        rows = [[c.model.hf_id, c.model.tag, c.status, c.detail] for c in left]
        lines += ["", "### Left as they are", "", markdown_table(["model", "tag", "why", "detail"], rows)]
    return "\n".join(lines)


def _commit_link(hf_id: str, revision: str) -> str:
    return f"[`{revision[:12]}`]({CANONICAL_URL}/{hf_id}/commit/{revision})"
