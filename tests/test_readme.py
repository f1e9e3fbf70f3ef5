"""The README says what the code does: its examples are checked against the code and the models file."""

from __future__ import annotations

import re

from pipeline.models.file import load_models, parse_models
from tests import demo
from tests.conftest import ROOT
from tests.fixture_hub import MINILM_ID

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start : end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_the_demo_commands_are_the_ones_it_prints() -> None:
    quick_start = section("## Quick start")
    shown = [line for block in blocks(quick_start, "sh") for line in block.splitlines() if "127.0.0.1:5000" in line]
    shown += [line for block in blocks(quick_start, "sh") for line in block.splitlines() if line.startswith("buildah")]
    assert shown == demo.try_commands(f"127.0.0.1:5000/{MINILM_ID.lower()}")
    assert "> Dockerfile" not in quick_start  # the Dockerfile goes to a temporary directory, never the clone


def test_the_models_file_example_is_valid_and_pinned_as_models_yaml() -> None:
    (example,) = blocks(section("### The models file"), "yaml")
    shipped = {model.repository: model for model in load_models(ROOT / "models" / "models.yaml")}
    for model in parse_models(example, "README.md"):
        assert model.revision == shipped[model.repository].revision, model.hf_id


def test_an_oci_layout_is_copied_by_the_tag_it_was_exported_with() -> None:
    text = "".join(blocks(section("### Reading images without a registry"), "sh"))
    exported = re.findall(r"modelyard export-oci-layout (\S+?)(?::(\S+))? (\S+)", text)
    copied = re.findall(r"oci:(\S+?):(\S+) ", text)
    assert exported and copied
    assert {(directory, tag or "latest") for _, tag, directory in exported} >= set(copied)


def test_a_local_plain_http_registry_is_pushed_to_with_insecure() -> None:
    assert "modelyard push --to 127.0.0.1:5001/mirror --insecure" in " ".join(README.split())


def test_the_cold_start_is_measured() -> None:
    quick_start = " ".join(section("## Quick start").split())
    assert re.search(r"cold, on a fresh clone.*\d+ s.*\d+ MB", quick_start), "the README shows the measured cold start"
