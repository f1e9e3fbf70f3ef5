"""Building from the Hub, through a real HTTP fixture hub and the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build.batch import BatchOptions, ModelOutcome, build_models
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec
from pipeline.oci import image
from pipeline.oci.format import FORMAT_ANNOTATION, FORMAT_VERSION
from pipeline.store import Store, blob_key
from tests.conftest import with_formats
from tests.fixture_hub import MINILM_ID, MINILM_REVISION, FixtureHub, FixtureRepo, minilm_directory, minilm_repo
from tests.golden import pseudo_random

TINY_REVISION = "1" * 40
TINY_FILES = {
    "config.json": b'{"model_type": "gpt2"}\n',
    "model.safetensors": pseudo_random(5 * 1024 * 1024 + 7, b"tiny"),
    "onnx/model.onnx": pseudo_random(1000, b"onnx"),
    "README.md": b"---\nlicense: mit\npipeline_tag: text-generation\nlibrary_name: transformers\n---\n# Tiny\n",
}


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    repos = [
        FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES),
        FixtureRepo("gpt2", TINY_REVISION, {"config.json": b"{}", "vocab.json": b'{"a": 1}'}),
        FixtureRepo("org/gated", TINY_REVISION, {"config.json": b"{}"}, gated=True),
        FixtureRepo("org/private", TINY_REVISION, {"config.json": b"{}"}, private=True),
        minilm_repo(),
    ]
    with FixtureHub(repos) as running:
        yield running


def build(
    hub: FixtureHub, store: Store, tmp_path: Path, *models: ModelSpec, token: str | None = None, **options: object
) -> list[ModelOutcome]:
    client = HubClient(endpoint=hub.url, token=token, backoff=0.01)
    return build_models(list(models), store, client, BatchOptions(cache_dir=tmp_path / "cache", **options))  # type: ignore[arg-type]


def tiny(**fields: object) -> ModelSpec:
    return ModelSpec(**{"hf_id": "Org/Tiny-Model", "revision": TINY_REVISION, **fields})  # type: ignore[arg-type]


def extract(store: Store, name: str, tag: str, destination: Path) -> dict[str, bytes]:
    """The files of an image, as a plain extractor sees them."""
    descriptor = store.get_tag(name, tag)
    assert descriptor is not None
    index = store.read_json_blob(descriptor.digest)
    manifest = store.read_json_blob(index["manifests"][0]["digest"])
    blob = store.backend.path(blob_key(manifest["layers"][0]["digest"]))  # type: ignore[attr-defined]
    with tarfile.open(blob, "r:gz") as archive:
        archive.extractall(destination, filter="data")
    return {p.relative_to(destination).as_posix(): p.read_bytes() for p in destination.rglob("*") if p.is_file()}


def stored(store: Store) -> list[str]:
    return sorted(info.key for info in store.backend.list(""))


def test_minilm_end_to_end(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    source = minilm_directory()
    spec = ModelSpec(MINILM_ID.lower(), MINILM_REVISION, source="models.yaml:95")
    (outcome,) = build(hub, store, tmp_path, spec)
    assert outcome.status == "built", outcome.detail
    name = "sentence-transformers/all-minilm-l6-v2"
    assert store.tags(name) == with_formats(["latest", MINILM_REVISION])

    files = extract(store, name, "latest", tmp_path / "image")
    expected = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert files == expected  # byte-identical to the package's files

    record = store.get_catalog(name)
    assert record is not None
    assert record["hf_id"] == MINILM_ID and record["revision"] == MINILM_REVISION
    assert record["tags"] == ["latest", MINILM_REVISION]
    assert record["index_digest"] == outcome.detail
    assert record["license"] == "apache-2.0" and record["pipeline_tag"] == "sentence-similarity"
    assert record["library_name"] == "sentence-transformers" and "feature-extraction" in record["hub_tags"]
    assert record["gated"] is False and record["source"] == f"https://huggingface.co/{MINILM_ID}"
    assert record["model_card"] == (source / "README.md").read_text()
    assert record["total_size"] == sum(len(data) for data in expected.values())
    weights = next(f for f in record["files"] if f["path"] == "model.safetensors")
    assert weights["sha256"] == hashlib.sha256(expected["model.safetensors"]).hexdigest()
    assert not (tmp_path / "cache" / "models--sentence-transformers--all-MiniLM-L6-v2").exists()  # cache cleaned

    hub.requests.clear()
    (again,) = build(hub, store, tmp_path, spec)
    assert (again.status, again.detail) == ("skipped", "up to date")
    assert hub.requests == []  # nothing downloaded, not even listed


def test_include_exclude_mixed_case_and_the_revision_tag(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    (outcome,) = build(hub, store, tmp_path, tiny(exclude=("onnx/*",)))
    assert outcome.status == "built", outcome.detail
    assert store.repositories() == ["org/tiny-model"]
    files = extract(store, "org/tiny-model", TINY_REVISION, tmp_path / "image")
    assert files == {k: v for k, v in TINY_FILES.items() if not k.startswith("onnx/")}
    index = store.read_json_blob(outcome.detail)
    assert index["annotations"]["org.opencontainers.image.source"] == "https://huggingface.co/Org/Tiny-Model"
    assert index["annotations"]["org.opencontainers.image.licenses"] == "mit"

    # A variant of the same revision: its own tag; the revision tag stays with the first entry.
    (only_json,) = build(hub, store, tmp_path, tiny(include=("*.json",), tag="json-only", pin=False))
    assert only_json.status == "built"
    assert store.get_tag("org/tiny-model", TINY_REVISION) == store.get_tag("org/tiny-model", "latest")
    assert store.read_json_blob(only_json.detail)["annotations"]["dev.modelyard.include"] == '["*.json"]'
    (changed,) = build(hub, store, tmp_path, tiny(exclude=("onnx/*", "README.md")))
    assert changed.status == "built"  # same tag and revision, another selection: rebuilt
    assert set(extract(store, "org/tiny-model", "json-only", tmp_path / "json")) == {"config.json"}
    record = store.get_catalog("org/tiny-model")
    assert record is not None and record["model_card"].endswith("# Tiny\n")  # fetched though not in the image

    (none,) = build(hub, store, tmp_path, tiny(include=("*.gguf",), tag="nothing", source="m.yaml:3"))
    assert none.status == "failed" and "m.yaml:3: include/exclude leave none of the 4 files" in none.detail


def test_a_legacy_id_without_an_org(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    (outcome,) = build(hub, store, tmp_path, ModelSpec("gpt2", TINY_REVISION))
    assert outcome.status == "built", outcome.detail
    assert store.tags("gpt2") == with_formats(["latest", TINY_REVISION])


@pytest.mark.parametrize("path", ["model.safetensors", "README.md"])
def test_a_corrupted_file_is_never_published(hub: FixtureHub, store: Store, tmp_path: Path, path: str) -> None:
    hub.faults.corrupt.add(path)
    outcome, _ = build(hub, store, tmp_path, tiny(), ModelSpec("gpt2", TINY_REVISION))
    assert outcome.status == "failed"
    kind = "sha256" if path.endswith(".safetensors") else "git blob id"
    assert outcome.detail.startswith(f"Org/Tiny-Model: {path}: {kind} is ")
    assert ", the Hub says " in outcome.detail and outcome.detail.endswith("not published")
    assert store.tags("org/tiny-model") == [] and store.get_catalog("org/tiny-model") is None
    assert not any(key.startswith("uploads/") for key in stored(store))
    assert store.tags("gpt2") != []  # the next model was still built
    assert not (tmp_path / "cache" / "models--Org--Tiny-Model").exists()  # the corrupt download is gone

    hub.faults.corrupt.clear()
    (fixed,) = build(hub, store, tmp_path, tiny())
    assert fixed.status == "built"


def test_server_errors_are_retried(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.errors.update({"api": 2, "model.safetensors": 2, "config.json": 1})
    (outcome,) = build(hub, store, tmp_path, tiny())
    assert outcome.status == "built", outcome.detail
    assert hub.faults.errors == {"api": 0, "model.safetensors": 0, "config.json": 0}


def test_persistent_server_errors_fail_that_model_only(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.errors["model.safetensors"] = 100
    failed, built = build(hub, store, tmp_path, tiny(), ModelSpec("gpt2", TINY_REVISION))
    assert failed.status == "failed" and failed.detail.startswith(f"download model.safetensors from {hub.url} failed")
    assert "500" in failed.detail
    assert built.status == "built"
    assert [k for k in stored(store) if "tiny" in k] == ["failures/org/tiny-model.json"]  # nothing published


def test_a_failure_is_recorded_until_the_model_publishes(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.errors["model.safetensors"] = 100
    (failed,) = build(hub, store, tmp_path, tiny(source="m.yaml:2"))
    record = store.get_failure("org/tiny-model")
    assert record is not None and record["error"] == failed.detail
    assert {k: record[k] for k in ("name", "hf_id", "revision", "tag", "format_version")} == {
        "name": "org/tiny-model",
        "hf_id": "Org/Tiny-Model",
        "revision": TINY_REVISION,
        "tag": "latest",
        "format_version": FORMAT_VERSION,
    }
    assert isinstance(record["failed_at"], int)

    (variant,) = build(hub, store, tmp_path, tiny(tag="configs", include=("config.json",)))
    assert variant.status == "built"  # another entry of the same repository: its success is not this one's
    assert store.get_failure("org/tiny-model") == record

    hub.faults.errors["model.safetensors"] = 0
    (built,) = build(hub, store, tmp_path, tiny())
    assert built.status == "built" and store.get_failure("org/tiny-model") is None


def test_a_dropped_connection_resumes(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.drops["model.safetensors"] = 1
    (outcome,) = build(hub, store, tmp_path, tiny())
    assert outcome.status == "built", outcome.detail
    assert (
        extract(store, "org/tiny-model", "latest", tmp_path / "x")["model.safetensors"]
        == TINY_FILES["model.safetensors"]
    )


def test_gated_and_private_repositories(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    gated = ModelSpec("org/gated", TINY_REVISION)
    private = ModelSpec("org/private", TINY_REVISION)
    no_token = build(hub, store, tmp_path, gated, private)
    assert [o.status for o in no_token] == ["failed", "failed"]
    assert no_token[0].detail == (
        "org/gated is gated: accept its conditions at https://huggingface.co/org/gated while logged in, "
        "then set HF_TOKEN to a token of that account (or run `hf auth login`)"
    )
    assert no_token[1].detail.startswith("org/private was not found on") and "set HF_TOKEN" in no_token[1].detail

    hub.faults.tokens.add("hf_good")
    assert build(hub, store, tmp_path, gated, token="hf_bad")[0].status == "failed"  # 403: no access
    assert [o.status for o in build(hub, store, tmp_path, gated, private, token="hf_good")] == ["built", "built"]


def test_unknown_repository_and_revision(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    missing, bad_revision = build(hub, store, tmp_path, ModelSpec("org/nope", TINY_REVISION), tiny(revision="2" * 40))
    assert missing.detail.startswith("org/nope was not found on")
    assert bad_revision.detail.startswith(f"Org/Tiny-Model has no revision {'2' * 40}: pin a commit that exists")


def test_moved_tag_and_format_change(
    hub: FixtureHub, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Published by a release of format 1 (its annotation says so; its bytes do not matter here).
    with monkeypatch.context() as patch:
        patch.setattr(image, "FORMAT_VERSION", "1")
        (first,) = build(hub, store, tmp_path, tiny())
        store.delete_tag("org/tiny-model", TINY_REVISION)
        (moved,) = build(hub, store, tmp_path, tiny())
    assert (moved.status, moved.detail) == ("skipped", f"up to date; tag {TINY_REVISION} moved to {first.detail}")
    assert store.get_tag("org/tiny-model", TINY_REVISION) == store.get_tag("org/tiny-model", "latest")
    published = store.read_json_blob(first.detail)
    assert published["annotations"][FORMAT_ANNOTATION] == "1"

    # This release (format 2) rebuilds it.
    (rebuilt,) = build(hub, store, tmp_path, tiny())
    assert rebuilt.status == "built" and rebuilt.detail != first.detail
    assert store.read_json_blob(rebuilt.detail)["annotations"][FORMAT_ANNOTATION] == FORMAT_VERSION == "2"
    (again,) = build(hub, store, tmp_path, tiny())
    assert (again.status, again.detail) == ("skipped", "up to date")
    (forced,) = build(hub, store, tmp_path, tiny(), force=True)
    assert (forced.status, forced.detail) == ("built", rebuilt.detail)  # same input, same digest


def test_keep_cache(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    build(hub, store, tmp_path, tiny(), keep_cache=True)
    assert (tmp_path / "cache" / "models--Org--Tiny-Model").is_dir()
    hub.requests.clear()
    (again,) = build(hub, store, tmp_path, tiny(), force=True, keep_cache=True)
    assert again.status == "built" and hub.downloads() == []  # rebuilt from the cache
