"""``modelyard plan``: what a build of the models file would do and why, as text, JSON or a GitHub matrix.

:func:`print_plan` and :func:`print_disk` also draw the preview that ``modelyard build`` shows first.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from pipeline.build.batch import BatchOptions
from pipeline.build.plan import (
    MAX_MATRIX_JOBS,
    DiskNeed,
    Plan,
    check_disk,
    disk_needs,
    github_matrix,
    human_bytes,
    make_plan,
)
from pipeline.cli.console import DEFAULT_MODELS_FILE, FORMATTER, add_store_option, err, out
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec, load_models, select_models
from pipeline.store import LocalBackend, Store, open_store

HELP = """\
For each entry of the models file, what `modelyard build` would do and why:
  new                   nothing is published under its tag
  stale revision        its tag holds another revision than the one pinned
  stale selection       ... other include/exclude globs
  stale format version  ... an image of an older format version
  incomplete            published, but not all a publish writes is in the store
  previously failed     the last build of this revision and tag failed (the store keeps why)
  up to date            skipped by a build
Only the store is read to decide; then the Hub lists the revisions to build, for the size to
download ("size unknown: hub unreachable" when it does not answer; --offline does not ask).
A store that does not exist yet is a new one: every model is new.

--format github-matrix prints a GitHub Actions matrix of the models to build, one line of JSON:
  {"include": [{"job": "gpt2", "models": "gpt2", "count": 1, "download_bytes": 548105171}, ...]}
one job per repository (repository names: HF ids lower-cased), or, beyond --max-jobs (default and
at most 256, GitHub's limit), repositories grouped into that many jobs of about equal download size
("job": "org/a +2", "models": "org/a org/b org/c"). A job runs `modelyard build --only <models>`.
Nothing to build gives {"include": []}, which GitHub refuses as a matrix: guard the build job with
  if: fromJSON(needs.plan.outputs.matrix).include[0] != null
"""

EXAMPLES = """\
Examples:
  modelyard plan                                     # models/models.yaml against ./store
  modelyard plan --store s3://models/prod --only gpt2
  modelyard plan --format json | jq '.models[] | select(.action == "build") | .name'
  echo "matrix=$(modelyard plan --store s3://models/prod --format github-matrix)" >> "$GITHUB_OUTPUT"
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = commands.add_parser(
        "plan",
        help="show what a build would do and why, before it downloads anything",
        formatter_class=FORMATTER,
        description=HELP,
        epilog=EXAMPLES,
    )
    plan.add_argument(
        "--models", default=DEFAULT_MODELS_FILE, metavar="FILE", help=f"models file (default: {DEFAULT_MODELS_FILE})"
    )
    add_store_option(plan)
    plan.add_argument("--only", nargs="+", metavar="NAME", help="plan only these models (HF id or repository name)")
    plan.add_argument(
        "--format", choices=("text", "json", "github-matrix"), default="text", help="output (default: text)"
    )
    plan.add_argument(
        "--max-jobs",
        type=int,
        default=MAX_MATRIX_JOBS,
        metavar="N",
        help=f"with github-matrix: at most N jobs (default: {MAX_MATRIX_JOBS})",
    )
    plan.add_argument("--offline", action="store_true", help="do not ask the Hub for sizes")
    plan.set_defaults(run=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    models = select_models(load_models(args.models), args.only or [])
    store = open_store(args.store)
    plan = make_plan(models, store, None if args.offline else HubClient(retries=1))
    # What machines read is printed verbatim, not through rich.
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2))
    elif args.format == "github-matrix":
        print(json.dumps(github_matrix(plan, args.max_jobs), separators=(",", ":")))
    else:
        print_plan(plan, out, every_model=True)
    return 0


def print_plan(plan: Plan, console: Console, *, every_model: bool) -> None:
    """A table of the models (every one, or those to build) and a line of totals."""
    if plan.store_is_new:
        console.print(f"{plan.store} does not exist yet: a build creates it, and every model is new", markup=False)
    rows = plan.steps if every_model else tuple(plan.to_build)
    if rows:
        table = Table(box=None, pad_edge=False)
        for column in ("model", "tag", "action", "why", "download"):
            table.add_column(column, justify="right" if column == "download" else "left", overflow="fold")
        for step in rows:
            size = human_bytes(step.download) if step.download is not None else step.size_note
            table.add_row(
                step.model.repository,
                step.model.tag,
                "build" if step.builds else "skip",
                f"{step.reason}: {step.detail}" if step.detail else step.reason,
                size if step.builds else "",
            )
        console.print(table)
    console.print(summary(plan), markup=False)


def summary(plan: Plan) -> str:
    """``3 of 109 models to build: 1.2 GB to download, up to 1.2 GB stored; 106 up to date``."""
    total, building = len(plan.steps), len(plan.to_build)
    text = f"{building} of {total} model(s) to build"
    if building:
        text += f": {human_bytes(plan.download)} to download, up to {human_bytes(plan.stored)} stored"
        if plan.unknown_sizes:
            text += f" (and {plan.unknown_sizes} of unknown size)"
    return f"{text}; {total - building} up to date" if building < total else text


def print_disk(needs: list[DiskNeed], console: Console) -> None:
    for need in needs:
        where = " and ".join(str(path) for path in need.paths)
        verdict = "" if need.fits else ": NOT ENOUGH"
        console.print(
            f"disk: {where}: needs up to {human_bytes(need.needed)}, {human_bytes(need.free)} free{verdict}",
            markup=False,
        )


def preview_build(models: list[ModelSpec], store: Store, options: BatchOptions) -> Plan:
    """What ``modelyard build`` shows before it downloads anything: the plan, the disk; refused if it cannot fit."""
    plan = make_plan(models, store, HubClient(retries=1), force=options.force)
    print_plan(plan, err, every_model=False)
    store_dir = store.backend.root if isinstance(store.backend, LocalBackend) else None
    cache_dir = options.cache_dir if options.download == "cache" else None
    needs = disk_needs(plan, cache_dir=cache_dir, store_dir=store_dir, keep_cache=options.keep_cache)
    print_disk(needs, err)
    check_disk(needs)
    return plan
