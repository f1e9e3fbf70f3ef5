"""The workflows' security rules, and the modelyard commands they run, checked against the real CLI.

actionlint and zizmor (./dev lint) check syntax, expressions, shell and known weaknesses; these tests
hold what is particular to this project: which jobs may see which secret, and that every
`.venv/bin/modelyard COMMAND --option` a workflow runs exists.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from pipeline.cli import parser
from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
# Jobs that may read secrets, and which: the read-only store key, the read-write key, Hugging Face, the PR token.
READ = {"STORE_READ_ACCESS_KEY_ID", "STORE_READ_SECRET_ACCESS_KEY"}
WRITE = {"STORE_WRITE_ACCESS_KEY_ID", "STORE_WRITE_SECRET_ACCESS_KEY"}
SECRETS = {
    ("publish.yml", "plan"): READ,
    ("publish.yml", "build"): WRITE | {"HF_TOKEN"},
    ("publish.yml", "site"): WRITE,
    ("gc.yml", "dry-run"): READ,
    ("gc.yml", "collect"): WRITE,
    ("update.yml", "update"): {"UPDATE_PR_TOKEN"},
}
# Subcommands other engineers land this session (TEAM.md); the workflows are written against their
# interface. Until one is registered it may be absent; once it is, its options are checked like the others.
PENDING = {"plan", "site"}


def workflows() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yml"))}


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get("on") or workflow[True]  # YAML 1.1 reads a bare `on` key as True


def test_every_action_is_pinned_by_commit() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            if match := re.match(r"\s*(?:- )?uses: (\S+)@(\S+)(.*)", line):
                action, ref, comment = match.groups()
                assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {action}@{ref} is not pinned by commit"
                assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), f"{path.name}: {action}: say which release"


def test_least_privilege_and_no_untrusted_code_with_secrets() -> None:
    for name, workflow in workflows().items():
        assert workflow["permissions"] == {}, f"{name}: no default token permissions; each job asks for its own"
        assert "pull_request_target" not in triggers(workflow), f"{name}: pull_request_target runs forks with secrets"
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{name}: job {job_name} states its permissions"
            writes = {scope for scope, level in job["permissions"].items() if level == "write"}
            assert writes <= ({"contents", "pull-requests"} if name == "update.yml" else set()), (name, job_name)
            text = yaml.safe_dump(job)
            used = set(re.findall(r"secrets\.([A-Z_]+)", text))
            assert used == SECRETS.get((name, job_name), set()), f"{name}: job {job_name} reads {sorted(used)}"
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{name}: {job_name} keeps the token in .git"
    pull_request_workflows = [n for n, w in workflows().items() if "pull_request" in triggers(w)]
    assert sorted(pull_request_workflows) == ["ci.yml", "models.yml"]
    for name in pull_request_workflows:
        assert "secrets." not in (WORKFLOWS / name).read_text()


def test_the_build_matrix_is_bounded_and_keeps_going() -> None:
    build = workflows()["publish.yml"]["jobs"]["build"]
    assert build["strategy"]["fail-fast"] is False
    assert "max-parallel" in build["strategy"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["concurrency"] == {"group": "build-${{ matrix.job }}", "cancel-in-progress": False}
    assert build["if"] == "fromJSON(needs.plan.outputs.matrix).include[0] != null"  # GitHub refuses an empty matrix


def modelyard_commands() -> list[tuple[str, list[str]]]:
    """Every `.venv/bin/modelyard ...` command line in a workflow, split into words."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            for match in re.finditer(r"\.venv/bin/modelyard ([^;|>&)]*)", line):
                found.append((path.name, shlex.split(match[1].replace("${ONLY:+--only $ONLY}", "--only $ONLY"))))
    return found


def test_the_commands_the_workflows_run_exist() -> None:
    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    checked = set()
    for name, words in modelyard_commands():
        command, *rest = words
        if command not in commands and command in PENDING:
            continue
        assert command in commands, f"{name}: modelyard {command} does not exist"
        options = {option for action in commands[command]._actions for option in action.option_strings}
        for word in rest:
            if word.startswith("--"):
                assert word in options, f"{name}: modelyard {command} has no {word}"
        checked.add(command)
    assert checked >= {"validate", "changes", "build", "report", "update", "gc"}


@pytest.mark.parametrize("name", ["publish.yml", "gc.yml", "update.yml"])
def test_scheduled_and_manual_runs(name: str) -> None:
    on = triggers(workflows()[name])
    assert "workflow_dispatch" in on
    if name != "publish.yml":
        assert on["schedule"][0]["cron"]
