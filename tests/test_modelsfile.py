"""models.yaml validation: every problem reported, with file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ModelsFileError
from pipeline.models.file import ModelSpec, load_models, parse_models
from tests.conftest import ROOT

SHA = "7dbbc90392e2f80f3d3c277d6e90027e55de9125"


def problems(text: str) -> list[str]:
    with pytest.raises(ModelsFileError) as raised:
        parse_models(text, "models.yaml")
    return raised.value.problems


def test_the_shipped_models_file_is_valid() -> None:
    models = load_models(ROOT / "models" / "models.yaml")
    assert len(models) >= 109
    assert all(m.revision and m.tag for m in models)


def test_a_valid_entry_with_defaults_and_globs() -> None:
    (model,) = parse_models(f"models:\n  - name: Org/Model-X\n    sha: {SHA}\n    exclude: ['*.onnx']\n")
    assert model == ModelSpec("Org/Model-X", SHA, "latest", (), ("*.onnx",), "models.yaml:2")
    assert model.repository == "org/model-x"
    assert model.wants("config.json") and not model.wants("onnx/model.onnx")
    (gpt2,) = parse_models(f"models:\n  - name: gpt2\n    sha: {SHA}\n    include: ['*.json']\n")
    assert gpt2.repository == "gpt2" and gpt2.wants("config.json") and not gpt2.wants("model.safetensors")


def test_every_problem_is_reported_with_its_line_and_field() -> None:
    text = f"""models:
  - name: ok/model
    sha: {SHA}
  - name: bad//name
    sha: {SHA.upper()}
    tagAs: -nope
    colour: blue
  - sha: {SHA}
  - name: ok/model
    sha: {SHA}
  - name: other/model
    sha: 12345
    exclude: "*.bin"
"""
    assert problems(text) == [
        "models.yaml:4: models[1] (bad//name).name: 'bad//name' is not a Hugging Face repo id (expected 'org/name' or 'name')",
        f"models.yaml:5: models[1] (bad//name).sha: expected 40 lowercase hex characters, got '{SHA.upper()}'",
        "models.yaml:6: models[1] (bad//name).tagAs: '-nope' is not a valid OCI tag",
        "models.yaml:7: models[1] (bad//name).colour: unknown key (expected branch, exclude, include, name, sha, tagAs)",
        "models.yaml:8: models[2].name: missing",
        "models.yaml:9: ok/model: same name and tag (ok/model:latest) as the entry at models.yaml:2",
        "models.yaml:12: models[4] (other/model).sha: expected a string, got '12345' (quote it)",
        "models.yaml:13: models[4] (other/model).exclude: expected a list of glob patterns, like ['*.onnx', 'openvino/*']",
    ]


def test_names_that_are_not_valid_oci_names_once_lowercased() -> None:
    (problem,) = problems(f"models:\n  - name: org/a_-b\n    sha: {SHA}\n")
    assert problem.startswith("models.yaml:2: models[0] (org/a_-b).name: 'org/a_-b' is not a valid OCI repository name")


def test_structure_problems() -> None:
    assert problems("") == ["models.yaml:1: models: the file is empty; expected a top-level 'models:' list"]
    assert problems("models: {}\nextra: 1\n") == [
        "models.yaml:1: models: expected a list of entries, got a mapping",
        "models.yaml:2: extra: unknown top-level key (expected only 'models')",
    ]
    assert problems("models:\n  - [1]\n") == ["models.yaml:2: models[0]: expected a mapping, got a list"]
    assert (
        problems("models:\n  - name: a\n    name: b\n    sha: x\n")[0] == "models.yaml:3: models[0].name: appears twice"
    )
    (syntax,) = problems("models:\n  - name: [unclosed\n")
    assert syntax.startswith("models.yaml:3: not valid YAML")
    (reserved,) = problems(f"models:\n  - name: a/b\n    sha: {SHA}\n    tagAs: '{SHA}'\n")
    assert "reserved for the revision tag" in reserved


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match="cannot read"):
        load_models(tmp_path / "nope.yaml")


def test_a_tag_must_leave_room_for_its_format_tags() -> None:
    text = f"""models:
  - name: a/b
    sha: {SHA}
    tagAs: latest-modelpack
  - name: c/d
    sha: {SHA}
    tagAs: {"v" * 119}
"""
    assert problems(text) == [
        "models.yaml:4: models[0] (a/b).tagAs: tags ending in -modelkit, -modelpack name a tag's formats",
        "models.yaml:7: models[1] (c/d).tagAs: at most 118 characters, so that its format tag (vvvvvvvv...-modelpack) "
        "is a valid tag",
    ]
    (model,) = parse_models(f"models:\n  - name: e/f\n    sha: {SHA}\n    tagAs: {'v' * 118}\n")
    assert len(model.tag) == 118


def test_a_branch_for_update_to_follow() -> None:
    (model,) = parse_models(f"models:\n  - name: org/model\n    sha: {SHA}\n    branch: release/v2\n")
    assert model.branch == "release/v2"
    (default,) = parse_models(f"models:\n  - name: org/model\n    sha: {SHA}\n")
    assert default.branch is None
    for bad in ("-x", "a..b", "a b", "a/", "a.lock", ".hidden", "a//b", "x@{1}", "@", "a:b", "a/.b"):
        (problem,) = problems(f"models:\n  - name: org/model\n    sha: {SHA}\n    branch: '{bad}'\n")
        assert problem == f"models.yaml:4: models[0] (org/model).branch: {bad!r} is not a git branch name"
    (problem,) = problems(f"models:\n  - name: org/model\n    sha: {SHA}\n    branch: 3\n")
    assert problem == "models.yaml:4: models[0] (org/model).branch: expected a string, got '3' (quote it)"
