"""``modelyard update`` against the fixture hub: only the moved shas change, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.hub.client import HubClient
from pipeline.models.file import parse_models
from pipeline.models.update import pinned_shas, update_models_file
from tests.conftest import ROOT
from tests.fixture_hub import FixtureHub, FixtureRepo

OLD, NEW, DEV, DEV_NEW = "1a" * 20, "2b" * 20, "3c" * 20, "4d" * 20
CURRENT, GATED, GATED_NEW, PRIVATE = "5e" * 20, "6f" * 20, "7a" * 20, "8b" * 20
PRIVATE_NEW = "9c" * 20

# Everything a person writes: a header, comments beside and between entries, blank lines, quotes of both
# kinds, a flow mapping, odd indents, a variant of one revision, and an entry following another branch.
MODELS = f"""\
# Curated models. Keep this list sorted by hand; comments survive updates.
models:

  - name: org/moving          # a comment on the name
    sha: {OLD}   # pinned 2024-01-01
    tagAs: latest
  - name: org/moving
    sha: '{OLD}'
    tagAs: onnx               # a variant of the same revision
    include: ["*.onnx", config.json]
  -   name: Org/Branched
      sha: "{DEV}"
      branch: dev/v2
  - {{name: org/current, sha: {CURRENT}}}
  # gated and private repositories are left alone
  - name: org/gated
    sha: {GATED}
  - name: org/private
    sha: {PRIVATE}
  - name: org/gone
    sha: {OLD}
  - name: org/current
    sha: {CURRENT}
    tagAs: other
    branch: no-such-branch
"""


def repos() -> list[FixtureRepo]:
    files = {"config.json": b"{}"}
    return [
        FixtureRepo("org/moving", NEW, files),
        FixtureRepo("org/branched", "0d" * 20, files, branches={"dev/v2": DEV_NEW}),
        FixtureRepo("org/current", CURRENT, files),
        FixtureRepo("org/gated", GATED_NEW, files, gated=True),
        FixtureRepo("org/private", PRIVATE_NEW, files, private=True),
    ]


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    with FixtureHub(repos()) as served:
        yield served


def expected_after_update() -> str:
    return (
        MODELS.replace(f"sha: {OLD}   #", f"sha: {NEW}   #")
        .replace(f"sha: '{OLD}'", f"sha: '{NEW}'")
        .replace(f'sha: "{DEV}"', f'sha: "{DEV_NEW}"')
    )


def test_only_the_moved_shas_change_byte_for_byte(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    models.chmod(0o640)
    report = update_models_file(models, HubClient(endpoint=hub.url, retries=0).head)
    assert models.read_text() == expected_after_update()
    assert models.stat().st_mode & 0o777 == 0o640
    assert report.written
    statuses = [(c.model.hf_id, c.model.tag, c.status, c.revision) for c in report.changes]
    assert statuses == [
        ("org/moving", "latest", "moved", NEW),
        ("org/moving", "onnx", "moved", NEW),
        ("Org/Branched", "latest", "moved", DEV_NEW),
        ("org/current", "latest", "current", CURRENT),
        ("org/gated", "latest", "gated", GATED_NEW),
        ("org/private", "latest", "missing", None),  # without a token the Hub cannot tell private from missing
        ("org/gone", "latest", "missing", None),
        ("org/current", "other", "missing", None),
    ]
    details = {c.model.hf_id + ":" + c.model.tag: c.detail for c in report.changes}
    assert details["org/current:other"] == "org/current has no branch 'no-such-branch' on the Hub"
    assert details["org/gone:latest"].startswith(f"org/gone was not found on {hub.url}")
    assert report.summary() == "3 moved, 1 current, 4 left as they are (1 gated, 3 missing), 0 failed"
    # One lookup per repository and branch: the variant of org/moving asked nothing more.
    lookups = [path for method, path in hub.requests if path.startswith("/api/models/")]
    assert len(lookups) == 7 and lookups.count("/api/models/org/moving") == 1
    assert "/api/models/Org/Branched/revision/dev/v2" in lookups

    again = update_models_file(models, HubClient(endpoint=hub.url, retries=0).head)
    assert not again.written and again.count("moved") == 0 and models.read_text() == expected_after_update()


def test_crlf_line_endings_and_a_byte_order_mark_survive(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_bytes(b"\xef\xbb\xbf" + MODELS.replace("\n", "\r\n").encode())
    update_models_file(models, HubClient(endpoint=hub.url, retries=0).head)
    assert models.read_bytes() == b"\xef\xbb\xbf" + expected_after_update().replace("\n", "\r\n").encode()


def test_a_private_repository_seen_with_a_token_is_still_left(tmp_path: Path, hub: FixtureHub) -> None:
    hub.faults.tokens.add("hf_secret")
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    report = update_models_file(models, HubClient(endpoint=hub.url, token="hf_secret", retries=0).head)
    (private,) = [c for c in report.changes if c.model.hf_id == "org/private"]
    assert (private.status, private.revision) == ("private", PRIVATE_NEW)
    assert f"sha: {PRIVATE}" in models.read_text()


def test_dry_run_and_only(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    client = HubClient(endpoint=hub.url, retries=0)
    dry = update_models_file(models, client.head, dry_run=True)
    assert dry.count("moved") == 3 and not dry.written and models.read_text() == MODELS
    branched = [m for m in parse_models(MODELS, str(models)) if m.hf_id == "Org/Branched"]
    only = update_models_file(models, client.head, only=branched)
    assert [c.status for c in only.changes] == ["moved"]
    assert models.read_text() == MODELS.replace(f'sha: "{DEV}"', f'sha: "{DEV_NEW}"')


def test_a_failing_lookup_fails_only_its_entry(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: org/current\n    sha: {CURRENT}\n  - name: org/moving\n    sha: {OLD}\n")
    hub.faults.errors["api"] = 1  # the first lookup gets a 500 and no retry
    report = update_models_file(models, HubClient(endpoint=hub.url, retries=0).head)
    assert sorted(c.status for c in report.changes) in (["failed", "moved"], ["current", "failed"])
    (failed,) = [c for c in report.changes if c.status == "failed"]
    assert "failed" in failed.detail and "500" in failed.detail


def test_an_all_digit_sha_is_quoted_so_it_stays_a_string(tmp_path: Path) -> None:
    digits = "1234567890" * 4
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: org/moving\n    sha: {OLD}  # plain\n")
    with FixtureHub([FixtureRepo("org/moving", digits, {"config.json": b"{}"})]) as hub:
        update_models_file(models, HubClient(endpoint=hub.url, retries=0).head)
    assert models.read_text() == f"models:\n  - name: org/moving\n    sha: '{digits}'  # plain\n"
    assert parse_models(models.read_text())[0].revision == digits


def test_the_spans_are_exactly_the_shas() -> None:
    for pin in pinned_shas(MODELS):
        assert MODELS[pin.start : pin.end] == pin.model.revision


def test_the_shipped_models_file_round_trips_byte_for_byte() -> None:
    text = (ROOT / "models" / "models.yaml").read_text()
    pins = pinned_shas(text)
    assert len(pins) >= 109
    assert all(text[p.start : p.end] == p.model.revision for p in pins)


def run_cli(hub: FixtureHub, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_IMPLICIT_TOKEN="1", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "update", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_the_command_prints_what_moved(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    result = run_cli(hub, "--models", str(models), "--retries", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"moved    org/moving (latest): {OLD[:12]} -> {NEW} (default branch, {models}:4)"
    assert f"moved    Org/Branched (latest): {DEV[:12]} -> {DEV_NEW} (dev/v2, {models}:11)" in lines
    assert (
        f"gated    org/gated (latest): left at {GATED[:12]}: gated on the Hub: its files need an accepted token"
        in lines
    )
    assert lines[-2] == f"{models}: 3 moved, 1 current, 4 left as they are (1 gated, 3 missing), 0 failed"
    assert lines[-1] == f"wrote {models}"
    assert models.read_text() == expected_after_update()


def test_the_markdown_report_for_a_pull_request(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    result = run_cli(hub, "--models", str(models), "--format", "markdown", "--only", "org/moving", "org/gone")
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert report.startswith(f"`modelyard update` on `{models}`: 2 moved, 0 current, 1 left as they are (1 missing)")
    assert "| model | tag | branch | from | to |" in report
    assert (
        f"| [org/moving](https://huggingface.co/org/moving) | onnx | default branch | "
        f"[`{OLD[:12]}`](https://huggingface.co/org/moving/commit/{OLD}) | "
        f"[`{NEW[:12]}`](https://huggingface.co/org/moving/commit/{NEW}) |"
    ) in report
    assert "| org/gone | latest | missing | org/gone was not found on" in report


def test_usage_errors(tmp_path: Path, hub: FixtureHub) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    unknown = run_cli(hub, "--models", str(models), "--only", "org/nope")
    assert unknown.returncode == 1 and "error: --only: not in the models file: org/nope" in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: org/x\n    sha: short\n")
    invalid = run_cli(hub, "--models", str(bad))
    assert invalid.returncode == 1 and f"error: {bad}:3: models[0] (org/x).sha: expected 40" in invalid.stderr
    assert bad.read_text() == "models:\n  - name: org/x\n    sha: short\n"
