"""`modelyard build --report` in each build job, `modelyard report` in the summary job: as the workflow runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build.report import read_reports, write_report
from pipeline.errors import ModelyardError
from tests.conftest import ROOT
from tests.fixture_hub import FixtureHub, FixtureRepo

SHA = "ab" * 20


def modelyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_reports_of_parallel_jobs_make_one_summary(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - name: org/tiny\n    sha: {SHA}\n  - name: org/gone\n    sha: {SHA}\n  - name: org/lost\n    sha: {SHA}\n"
    )
    store, reports = tmp_path / "store", tmp_path / "reports"
    reports.mkdir()
    with FixtureHub([FixtureRepo("org/tiny", SHA, {"config.json": b"{}", "README.md": b"# tiny\n"})]) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
        common = ["build", "--models", str(models), "--store", str(store), "--cache-dir", str(tmp_path / "cache")]
        first = modelyard(
            *common, "--only", "org/tiny", "org/gone", "--retries", "0", "--report", str(reports / "a.json"), env=env
        )
        assert first.returncode == 1, first.stderr  # org/gone failed
        again = modelyard(*common, "--only", "org/tiny", "--report", str(reports / "b.json"), env=env)
        assert again.returncode == 0, again.stderr
    records = read_reports(sorted(reports.glob("*.json")))
    assert [(r.repository, r.status) for r in records] == [
        ("org/tiny", "built"),
        ("org/gone", "failed"),
        ("org/tiny", "skipped"),
    ]
    assert records[0].size_bytes == 9 and records[0].revision == SHA and set(records[0].timings) >= {"build"}

    matrix = {
        "include": [{"job": "org/tiny", "models": "org/tiny org/gone"}, {"job": "org/lost", "models": "org/lost"}]
    }
    result = modelyard("report", str(reports), "--matrix", json.dumps(matrix))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "## modelyard build"
    assert lines[2].startswith("1 failed, 1 missing, 1 built, 1 skipped; built 0.0 MB in ")
    assert lines[4] == "| model | result | size | time | MB/s | detail |"
    rows = lines[6:]
    assert rows[0].startswith("| `org/gone:latest` | ❌ failed |") and "org/gone was not found" in rows[0]
    assert rows[1] == "| `org/lost` | ⚠️ missing |  |  |  | no report: its build job was cancelled, timed out or lost |"
    assert rows[2].startswith("| `org/tiny:latest` | ✅ built | 0.0 MB |")
    assert rows[3].startswith("| `org/tiny:latest` | skipped |") and "up to date" in rows[3]


def test_no_reports_at_all_and_bad_ones(tmp_path: Path) -> None:
    nothing = modelyard("report", str(tmp_path / "absent"), "--matrix", '{"include": [{"job": "a", "models": "a"}]}')
    assert nothing.returncode == 0 and "1 missing, 0 built, 0 skipped" in nothing.stdout
    assert "absent: no such report" in nothing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 7}')
    with pytest.raises(ModelyardError, match=r"bad\.json: not a modelyard build report: version 7, expected 1"):
        read_reports([bad])
    result = modelyard("report", str(bad))
    assert result.returncode == 1 and "not a modelyard build report" in result.stderr
    matrix = modelyard("report", str(tmp_path), "--matrix", "{not json")
    assert matrix.returncode == 1 and "error: --matrix: not JSON" in matrix.stderr


def test_a_report_replaces_the_old_one_whole(tmp_path: Path) -> None:
    """A killed build must not leave a report cut short: the new one is written beside it, then renamed."""
    path = tmp_path / "report.json"
    path.write_text("an older report\n")
    before = path.stat().st_ino
    write_report(path, [])
    assert json.loads(path.read_text())["outcomes"] == []
    assert path.stat().st_ino != before and oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left beside it
