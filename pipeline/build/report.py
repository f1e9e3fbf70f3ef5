"""Build reports: what ``modelyard build --report FILE`` writes, and one table from many of them.

A workflow builds models in parallel jobs; each job writes its outcomes as JSON, and one last job
merges them into the run's summary (built, skipped and failed, with sizes and times). A model the
plan gave to a job that left no report (cancelled, timed out, its runner lost) is reported as such.

Example::

    write_report(Path("report.json"), outcomes)                    # in each build job
    records = read_reports(Path("reports").glob("*.json"))          # in the summary job
    print(markdown_summary(records, expected=["gpt2", "org/model"]))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.build.batch import ModelOutcome
from pipeline.errors import ModelyardError
from pipeline.files import replace_file
from pipeline.github import markdown_table, size_text

REPORT_VERSION = 1
ORDER = {"failed": 0, "missing": 1, "built": 2, "skipped": 3}  # what needs a look comes first


@dataclass(frozen=True)
class OutcomeRecord:
    """One model's outcome, as a report holds it."""

    name: str  # the Hugging Face id, as written in the models file
    repository: str
    tag: str
    revision: str
    status: str  # built, skipped, failed; "missing" when no report has the model
    detail: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, outcome: ModelOutcome) -> OutcomeRecord:
        model = outcome.model
        return cls(
            model.hf_id,
            model.repository,
            model.tag,
            model.revision,
            outcome.status,
            outcome.detail,
            outcome.size,
            round(outcome.seconds, 3),
            {phase: round(seconds, 3) for phase, seconds in outcome.timings.items()},
        )


def write_report(path: Path, outcomes: Sequence[ModelOutcome]) -> None:
    records = [asdict(OutcomeRecord.of(outcome)) for outcome in outcomes]
    replace_file(path, (json.dumps({"version": REPORT_VERSION, "outcomes": records}, indent=1) + "\n").encode())


def read_reports(paths: Iterable[Path]) -> list[OutcomeRecord]:
    """Every outcome of the reports, in their order; a report that is not one is an error naming it."""
    records = []
    for path in paths:
        try:
            document = json.loads(path.read_text())
            if document.get("version") != REPORT_VERSION:
                raise ValueError(f"version {document.get('version')!r}, expected {REPORT_VERSION}")
            records += [OutcomeRecord(**entry) for entry in document["outcomes"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise ModelyardError(f"{path}: not a modelyard build report: {err}") from err
    return records


def with_missing(records: Sequence[OutcomeRecord], expected: Iterable[str]) -> list[OutcomeRecord]:
    """The records, plus a "missing" one for each expected repository no record names."""
    seen = {record.repository for record in records}
    missing = [
        OutcomeRecord(name, name, "", "", "missing", "no report: its build job was cancelled, timed out or lost")
        for name in dict.fromkeys(expected)
        if name not in seen
    ]
    return [*records, *missing]


def counts(records: Sequence[OutcomeRecord]) -> dict[str, int]:
    found = {status: sum(r.status == status for r in records) for status in ORDER}
    return {status: count for status, count in found.items() if count or status != "missing"}


def markdown_summary(records: Sequence[OutcomeRecord], expected: Iterable[str] = ()) -> str:
    """A job summary: the totals, then one row per model, failures first."""
    records = with_missing(records, expected)
    built = [r for r in records if r.status == "built"]
    total_bytes, total_seconds = sum(r.size_bytes for r in built), sum(r.seconds for r in built)
    totals = ", ".join(f"{count} {status}" for status, count in counts(records).items())
    lines = [
        "## modelyard build",
        "",
        f"{totals}; built {size_text(total_bytes)} in {_duration(total_seconds)} of build time.",
        "",
    ]
    rows = [
        [
            f"`{r.repository}:{r.tag}`" if r.tag else f"`{r.repository}`",
            {"failed": "❌ failed", "missing": "⚠️ missing", "built": "✅ built"}.get(r.status, r.status),
            size_text(r.size_bytes) if r.size_bytes else "",
            _duration(r.seconds) if r.seconds else "",
            f"{r.size_bytes / r.seconds / 1e6:.0f}" if r.size_bytes and r.seconds else "",
            r.detail,
        ]
        for r in sorted(records, key=lambda r: (ORDER.get(r.status, 9), r.repository, r.tag))
    ]
    lines.append(markdown_table(["model", "result", "size", "time", "MB/s", "detail"], rows, align="llrrrl"))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def plan_repositories(matrix: dict[str, Any]) -> list[str]:
    """The repositories a GitHub matrix of ``modelyard plan --format github-matrix`` gives its jobs."""
    try:
        return [name for job in matrix["include"] for name in str(job["models"]).split()]
    except (KeyError, TypeError) as err:
        raise ModelyardError(f"not a matrix of `modelyard plan --format github-matrix`: {err}") from err
