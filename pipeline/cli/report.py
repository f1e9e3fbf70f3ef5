"""``modelyard report``: one summary of the build reports that parallel build jobs wrote."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.build.report import markdown_summary, plan_repositories, read_reports
from pipeline.cli.console import FORMATTER, err
from pipeline.errors import ModelyardError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="merge build reports (modelyard build --report) into one Markdown summary",
        formatter_class=FORMATTER,
        description="Merge the JSON reports of `modelyard build --report FILE` (one per parallel build job)\n"
        "into one Markdown table: the built, skipped and failed models with their sizes and times, failures\n"
        "first. With --matrix, a model the plan gave to a job that left no report is listed as missing.",
        epilog="Examples:\n"
        "  modelyard build --only gpt2 --report reports/gpt2.json\n"
        '  modelyard report reports/ >> "$GITHUB_STEP_SUMMARY"\n'
        '  modelyard report reports/ --matrix "$(modelyard plan --format github-matrix)"',
    )
    report.add_argument("reports", nargs="+", metavar="PATH", help="report files, or directories of *.json reports")
    report.add_argument("--matrix", metavar="JSON", help="the build matrix (modelyard plan --format github-matrix)")
    report.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for given in map(Path, args.reports):
        if given.is_dir():
            files += sorted(given.rglob("*.json"))
        elif given.exists():
            files.append(given)
        else:
            err.print(f"{given}: no such report (no build job uploaded one?)", markup=False)
    expected: list[str] = []
    if args.matrix:
        try:
            expected = plan_repositories(json.loads(args.matrix))
        except json.JSONDecodeError as error:
            raise ModelyardError(f"--matrix: not JSON: {error}") from error
    print(markdown_summary(read_reports(files), expected))  # not rich: Markdown must reach stdout verbatim
    return 0
