"""models.yaml validation: every problem reported, with file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import ModelsFileError
from pipeline.models.file import MAX_FILE_BYTES, ModelSpec, load_models, parse_models
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
        "models.yaml:12: models[4] (other/model).sha: expected 40 lowercase hex characters, got '12345'",
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
    assert problems("models:\n") == ["models.yaml:1: models: expected a list of entries, got nothing"]
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


def test_an_empty_list_is_refused() -> None:
    # A curated file that lists nothing is a mistake (a bad merge, a wrong file), never a plan to build nothing.
    assert problems("models: []\n") == [
        "models.yaml:1: models: the list is empty: add at least one entry (name and sha)"
    ]


def test_a_sha_of_digits_is_read_as_written() -> None:
    digits = "0123456789" * 4  # YAML would read an unquoted one as an int, dropping the leading zero
    (model,) = parse_models(f"models:\n  - name: a/b\n    sha: {digits}\n    tagAs: 2024\n")
    assert model.revision == digits and model.tag == "2024"
    assert problems("models:\n  - name: a/b\n    sha: 0123\n") == [
        "models.yaml:3: models[0] (a/b).sha: expected 40 lowercase hex characters, got '0123'"
    ]
    # what is really not a string still says so
    assert problems(f"models:\n  - name: a/b\n    sha: {SHA}\n    tagAs: yes\n") == [
        "models.yaml:4: models[0] (a/b).tagAs: expected a string, got 'yes' (quote it if you mean the text)"
    ]
    assert problems("models:\n  - name: a/b\n    sha:\n") == [
        "models.yaml:3: models[0] (a/b).sha: expected a string, got nothing (quote it if you mean the text)"
    ]
    assert (
        problems("models:\n  - name: [a]\n    sha: x\n")[0]
        == "models.yaml:2: models[0].name: expected a string, got a list"
    )


def test_a_path_with_colons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ci:run:2" / "models.yaml"
    path.parent.mkdir()
    path.write_text(f"models:\n  - name: a/b\n    sha: nope\n  - name: a/b\n    sha: {SHA}\n    colour: 1\n")
    with pytest.raises(ModelsFileError) as raised:
        load_models(path)
    assert raised.value.problems == [
        f"{path}:3: models[0] (a/b).sha: expected 40 lowercase hex characters, got 'nope'",
        f"{path}:6: models[1] (a/b).colour: unknown key (expected branch, exclude, include, name, sha, tagAs)",
    ]
    for argv in (["validate", str(path)], ["build", "--models", str(path), "--store", str(tmp_path / "s")]):
        assert main(argv) == 1
        assert f"error: {path}:3: models[0] (a/b).sha" in capsys.readouterr().err


def test_the_size_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    entry = f"  - name: org/model\n    sha: {SHA}\n"
    big.write_text("models:\n" + entry * (MAX_FILE_BYTES // len(entry) + 1))
    for path in (big, Path("/dev/zero")):
        with pytest.raises(ModelsFileError, match=f"larger than {MAX_FILE_BYTES:,} bytes"):
            load_models(path)
    with pytest.raises(ModelsFileError, match="larger than"):
        parse_models(big.read_text())


def test_aliases_may_share_a_list_but_not_explode() -> None:
    shared = f"""models:
  - name: a/one
    sha: {SHA}
    exclude: &weights ["*.onnx", "*.h5"]
  - name: a/two
    sha: {SHA}
    exclude: *weights
"""
    assert [m.exclude for m in parse_models(shared)] == [("*.onnx", "*.h5")] * 2
    laughs = ['x: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"y{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (problem,) = problems("\n".join(laughs) + "\n")
    assert problem.startswith("models.yaml:7: aliases expand this document beyond 1,000,000 nodes")
    (loop,) = problems("models: &a [*a]\n")
    assert loop == "models.yaml:1: an alias refers to a node that contains it"
    (deep,) = problems("models: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert deep == "models.yaml:1: nested deeper than 32 levels: not a models file"


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
    (numbered,) = parse_models(f"models:\n  - name: org/model\n    sha: {SHA}\n    branch: 3\n")
    assert numbered.branch == "3"  # read as written
    (problem,) = problems(f"models:\n  - name: org/model\n    sha: {SHA}\n    branch: true\n")
    assert problem == (
        "models.yaml:4: models[0] (org/model).branch: expected a string, got 'true' (quote it if you mean the text)"
    )
