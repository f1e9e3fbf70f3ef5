"""`modelyard plan` and the build preview: what a build would do and why, sizes from a real (fixture) Hub.

Stores in every state are made by real builds through the fixture Hub, then changed as the world
changes them: a new pin, other globs, an image of an older format, a failure record.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from pipeline.build import plan as plan_module
from pipeline.build.batch import BatchOptions, build_models, failure_record
from pipeline.build.plan import (
    HUB_UNREACHABLE,
    DiskNeed,
    DiskSpaceError,
    Plan,
    Step,
    check_disk,
    disk_needs,
    github_matrix,
    human_bytes,
    layer_size_bound,
    make_plan,
)
from pipeline.cli import main
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec
from pipeline.oci.format import FORMAT_ANNOTATION, FORMAT_VERSION
from pipeline.store import LocalBackend, Store
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.golden import pseudo_random

R1, R2 = "1" * 40, "2" * 40
FILES = {
    "config.json": b'{"model_type": "gpt2"}\n',
    "model.safetensors": pseudo_random(3 * 1024 * 1024 + 5, b"weights"),
    "onnx/model.onnx": pseudo_random(1000, b"onnx"),
}
ALL = sum(len(data) for data in FILES.values())


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    repos = [FixtureRepo("Org/Tiny", R1, FILES), FixtureRepo("gpt2", R1, {"config.json": b"{}"})]
    with FixtureHub(repos) as running:
        yield running


def spec(hf_id: str = "Org/Tiny", revision: str = R1, **fields: object) -> ModelSpec:
    return ModelSpec(hf_id, revision, source="models.yaml:2", **fields)  # type: ignore[arg-type]


def client(hub: FixtureHub) -> HubClient:
    return HubClient(endpoint=hub.url, retries=1, backoff=0.01)


def built_store(hub: FixtureHub, tmp_path: Path, *models: ModelSpec) -> Store:
    store = Store(LocalBackend(tmp_path / "store"))
    outcomes = build_models(list(models), store, client(hub), BatchOptions(cache_dir=tmp_path / "cache"))
    assert [o.status for o in outcomes] == ["built"] * len(models), [o.detail for o in outcomes]
    return store


def reasons(plan: Plan) -> list[tuple[str, str]]:
    return [(step.model.repository, step.reason) for step in plan.steps]


def test_a_store_in_every_state(hub: FixtureHub, tmp_path: Path) -> None:
    new = make_plan([spec()], Store(LocalBackend(tmp_path / "none")), client(hub))
    assert new.store_is_new and reasons(new) == [("org/tiny", "new")]
    (step,) = new.steps
    assert (step.download, step.files) == (ALL, 3) and step.builds

    store = built_store(hub, tmp_path, spec())
    downloads = len(hub.downloads())
    requests = len(hub.requests)
    current = make_plan([spec(), spec("gpt2")], store, client(hub))
    assert reasons(current) == [("org/tiny", "up to date"), ("gpt2", "new")]
    assert current.steps[0].download is None  # an up-to-date model costs no Hub request
    assert current.steps[1].download == 2
    assert [path.split("/")[3] for _, path in hub.requests[requests:]] == ["gpt2"]  # its file listing, no more
    assert (current.download, len(current.to_build)) == (2, 1)

    hub.repos["org/tiny"] = FixtureRepo("Org/Tiny", R2, FILES)  # the pin moves to a new revision
    (moved,) = make_plan([spec(revision=R2)], store, client(hub)).steps
    assert (moved.reason, moved.detail, moved.download) == (
        "stale revision",
        "published 111111111111, pinned 222222222222",
        ALL,
    )
    hub.repos["org/tiny"] = FixtureRepo("Org/Tiny", R1, FILES)

    (globs,) = make_plan([spec(exclude=("*.onnx",))], store, client(hub)).steps
    assert (globs.reason, globs.detail) == ("stale selection", "published with include [], exclude []")
    assert (globs.download, globs.files) == (ALL - 1000, 2)

    (forced,) = make_plan([spec()], store, client(hub), force=True).steps
    assert forced.reason == "forced" and forced.download == ALL

    store.backend.delete("catalog/org/tiny.json")  # a build killed between its tags and its record
    (partial,) = make_plan([spec()], store, None).steps
    assert (partial.reason, partial.detail) == (
        "incomplete",
        "published, but not all that a publish writes is in the store",
    )

    failed = spec("gpt2")
    store.put_failure(failed.repository, failure_record(failed, "gpt2 was not found on the Hub", 0))
    assert reasons(make_plan([failed], store, None)) == [("gpt2", "previously failed")]
    assert make_plan([failed], store, None).steps[0].detail == "gpt2 was not found on the Hub"
    other_pin = spec("gpt2", revision=R2)  # a failure of another revision is not this entry's
    assert reasons(make_plan([other_pin], store, None)) == [("gpt2", "new")]

    _republish_as_format(store, "org/tiny", "0")  # an image an older modelyard built
    (old,) = make_plan([spec()], store, None).steps
    assert (old.reason, old.detail, old.download) == ("stale format version", f"format 0, now {FORMAT_VERSION}", None)
    assert downloads == len(hub.downloads())  # planning never downloads


def _republish_as_format(store: Store, name: str, version: str) -> None:
    """Point the tag at a copy of its index whose format annotation says ``version``."""
    descriptor = store.get_tag(name, "latest")
    assert descriptor is not None
    index = store.read_json_blob(descriptor.digest)
    index["annotations"][FORMAT_ANNOTATION] = version
    data = json.dumps(index).encode()
    digest = store.put_blob(data)
    store.put_tag(name, "latest", type(descriptor)(descriptor.media_type, digest, len(data)))


def test_a_hub_that_is_down_leaves_sizes_unknown_at_once(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = HubClient(endpoint=f"http://127.0.0.1:{closed.getsockname()[1]}", retries=1, backoff=0.01)
        plan = make_plan([spec(), spec("gpt2"), spec("org/other")], Store(LocalBackend(tmp_path / "s")), down)
    assert [(s.reason, s.download, s.size_note) for s in plan.steps] == [("new", None, HUB_UNREACHABLE)] * 3
    assert plan.unknown_sizes == 3


def test_a_model_the_hub_does_not_have(hub: FixtureHub, tmp_path: Path) -> None:
    (step,) = make_plan([spec("org/missing")], Store(LocalBackend(tmp_path / "s")), client(hub)).steps
    assert step.download is None and step.size_note.startswith("size unknown: org/missing was not found on")


def test_the_layer_bound_holds(hub: FixtureHub, tmp_path: Path) -> None:
    store = built_store(hub, tmp_path, spec(), spec("gpt2"))
    for name, content, files in (("org/tiny", ALL, 3), ("gpt2", 2, 1)):
        layer = store.blob_size(_layer_digest(store, name))
        assert layer is not None and content < layer <= layer_size_bound(content, files)
    assert layer_size_bound(10**9, 1) < 10**9 * 1.001  # and stays tight


def _layer_digest(store: Store, name: str) -> str:
    descriptor = store.get_tag(name, "latest")
    assert descriptor is not None
    manifest = store.read_json_blob(store.read_json_blob(descriptor.digest)["manifests"][0]["digest"])
    return str(manifest["layers"][0]["digest"])


# disk


def test_disk_needs_add_up_on_one_filesystem(tmp_path: Path) -> None:
    plan = Plan(
        (
            Step(spec("a/one"), "new", download=100, files=1),
            Step(spec("a/two"), "new", download=300, files=1),
            Step(spec("a/three"), "up to date"),
        ),
        "store",
        False,
    )
    cache, store = tmp_path / "cache", tmp_path / "store"
    one = disk_needs(plan, cache_dir=cache, store_dir=store, filesystem=lambda path: (1, 10**6))
    assert one == [DiskNeed((cache, store), 300 + layer_size_bound(100, 1) + layer_size_bound(300, 1), 10**6)]
    apart = disk_needs(plan, cache_dir=cache, store_dir=store, keep_cache=True, filesystem=lambda p: (hash(p), 5))
    assert [(n.paths, n.needed) for n in apart] == [((cache,), 400), ((store,), plan.stored)]
    bucket = disk_needs(plan, cache_dir=cache, store_dir=None, filesystem=lambda path: (1, 10**6))
    assert [(n.paths, n.needed) for n in bucket] == [((cache,), 300)]  # one model's download at a time
    with pytest.raises(DiskSpaceError) as refused:
        check_disk(apart)
    assert str(refused.value) == (
        f"not enough disk for this build: {cache} need 400 B (400 bytes) on its filesystem, which has 5 B (5 bytes) "
        "free. Build fewer models (--only), free some space, or choose another --cache-dir or --store (an s3:// bucket)"
    )


# GitHub matrix


def test_the_matrix_is_one_job_per_repository_or_bounded_groups() -> None:
    steps = [Step(spec(f"org/m{i}"), "new", download=i + 1, files=1) for i in range(600)]
    steps += [Step(spec("org/m0", tag="fp16"), "stale selection", download=1000, files=1)]  # a variant: same job
    steps += [Step(spec("org/done"), "up to date")]
    plan = Plan(tuple(steps), "store", False)
    small = github_matrix(Plan(tuple(steps[:3]), "store", False))
    assert small == {
        "include": [{"job": f"org/m{i}", "models": f"org/m{i}", "count": 1, "download_bytes": i + 1} for i in range(3)]
    }
    jobs = github_matrix(plan)["include"]
    assert len(jobs) == 256
    names = [name for job in jobs for name in job["models"].split()]
    assert sorted(names) == sorted(f"org/m{i}" for i in range(600))  # every repository once; never org/done
    loads = [job["download_bytes"] for job in jobs]
    assert sum(loads) == sum(range(1, 601)) + 1000 and max(loads) - min(loads) <= 1001
    assert all(job["count"] == len(job["models"].split()) for job in jobs)
    assert github_matrix(Plan((steps[-1],), "store", False)) == {"include": []}
    assert len(github_matrix(plan, max_jobs=3)["include"]) == 3


# the command line


def models_file(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n" + "".join(f"  - name: {name}\n    sha: '{R1}'\n" for name in names))
    return path


def test_plan_command_for_a_models_file_change(
    hub: FixtureHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built_store(hub, tmp_path, spec())
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # what HF_ENDPOINT sets when huggingface_hub loads
    changed = models_file(tmp_path, "Org/Tiny", "gpt2")  # a pull request adds gpt2
    argv = ["plan", "--models", str(changed), "--store", str(tmp_path / "store")]
    assert main([*argv, "--format", "github-matrix"]) == 0
    matrix = json.loads(capsys.readouterr().out)
    assert matrix == {"include": [{"job": "gpt2", "models": "gpt2", "count": 1, "download_bytes": 2}]}
    assert main(argv) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "org/tiny latest skip up to date" in lines and "gpt2 latest build new 2 B" in lines
    assert lines[-1] == "1 of 2 model(s) to build: 2 B to download, up to 67.6 kB stored; 1 up to date"
    assert main([*argv, "--format", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["action"], m["reason"], m["download_bytes"]) for m in as_json["models"]] == [
        ("Org/Tiny", "skip", "up to date", None),
        ("gpt2", "build", "new", 2),
    ]


def test_plan_help_documents_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = capsys.readouterr().out
    assert '{"include": [{"job": "gpt2", "models": "gpt2", "count": 1, "download_bytes": 548105171}' in text
    assert "fromJSON(needs.plan.outputs.matrix).include[0] != null" in text


def test_build_needs_an_explicit_choice(hub: FixtureHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = models_file(tmp_path, "Org/Tiny", "gpt2")
    assert main(["build", "--models", str(models), "--store", str(tmp_path / "store")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: which models? Name them with --only NAME..., or build all 2 of {models} with --all "
        "(`modelyard plan` shows what that would download)"
    )
    assert hub.requests == [] and not (tmp_path / "store").exists()


def test_build_previews_then_builds(hub: FixtureHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = models_file(tmp_path, "Org/Tiny", "gpt2")
    store, cache = tmp_path / "store", tmp_path / "cache"
    argv = ["build", "--models", str(models), "--store", str(store), "--cache-dir", str(cache)]
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    built = subprocess.run([sys.executable, "-m", "pipeline", *argv, "--all"], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr
    lines = [" ".join(line.split()) for line in built.stderr.splitlines()]
    assert "org/tiny latest build new 3.1 MB" in lines and "gpt2 latest build new 2 B" in lines
    assert "2 of 2 model(s) to build: 3.1 MB to download, up to 3.3 MB stored" in lines
    assert any(line.startswith(f"disk: {cache} and {store}: needs up to 6.4 MB, ") for line in lines)
    assert built.stderr.index("model(s) to build") < built.stderr.index("building 2 model(s)")
    assert main([*argv, "--only", "gpt2"]) == 0  # in this process: nothing to download
    assert "0 of 1 model(s) to build; 1 up to date" in capsys.readouterr().err


def test_build_refuses_what_cannot_fit(
    hub: FixtureHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(plan_module, "_filesystem", lambda path: (1, 1000))  # a disk with 1,000 bytes free
    models = models_file(tmp_path, "Org/Tiny")
    store = tmp_path / "store"
    assert main(["build", "--models", str(models), "--store", str(store), "--all", "--cache-dir", str(tmp_path)]) == 1
    needed = ALL + layer_size_bound(ALL, 3)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: not enough disk for this build: {tmp_path} and {store} need {human_bytes(needed)} ({needed:,} bytes) on their "
        "filesystem, which has 1.0 kB (1,000 bytes) free. Build fewer models (--only), free some space, or "
        "choose another --cache-dir or --store (an s3:// bucket)"
    )
    assert hub.downloads() == [] and not store.exists()


def test_plan_of_a_bucket_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.registry_fixtures import moto_s3

    with moto_s3() as s3:
        assert main(["plan", "--models", str(models_file(tmp_path, "gpt2")), "--store", "s3://nope", "--offline"]) == 1
        assert f"error: no bucket 'nope' at {s3.endpoint}" in capsys.readouterr().err
        assert (
            main(["plan", "--models", str(models_file(tmp_path, "gpt2")), "--store", "s3://models/x", "--offline"]) == 0
        )
        assert "s3://models/x does not exist yet: a build creates it" in capsys.readouterr().out
