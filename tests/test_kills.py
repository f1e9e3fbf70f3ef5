"""A real `modelyard build` killed with SIGKILL at the worst moments, on both stores: running it again converges.

What the README's Reliability section promises is checked here: after a kill at each write a build makes
to the store, no tag points at anything missing, no blob holds other bytes than its digest says, and
running the build again gives the store a build without the kill would have left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build.batch import BatchOptions, build_models
from pipeline.digest import sha256_digest
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec
from pipeline.oci.references import missing
from pipeline.store import LocalBackend, Store, open_store
from pipeline.store.gc import DEFAULT_GRACE, sweep_uploads
from pipeline.store.s3 import S3Backend
from pipeline.store.store import BLOBS_PREFIX
from tests.conftest import write_tree
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.killing import modelyard, paused_at, start_paused
from tests.registry_fixtures import moto_s3
from tests.test_hub import TINY_FILES, TINY_REVISION

NAME = "org/tiny-model"
MiB = 1024 * 1024


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    with FixtureHub([FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES)]) as running:
        yield running


@contextlib.contextmanager
def a_store(kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A store location of each kind, and the environment a process needs to reach it."""
    if kind == "local":
        yield str(tmp_path / "store"), {}
        return
    with moto_s3() as s3:
        yield "s3://models/killed", s3.env


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_kill_between_the_tags_and_the_catalog_record(hub: FixtureHub, tmp_path: Path, kind: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f'models:\n  - name: Org/Tiny-Model\n    sha: "{TINY_REVISION}"\n')
    with a_store(kind, tmp_path) as (location, env):
        env = {**env, "HF_ENDPOINT": hub.url}
        args = ["build", "--all", "--models", str(models), "--store", location, "--cache-dir", str(tmp_path / "cache")]
        store = open_store(location)
        with paused_at(f"catalog/{NAME}.json", args, tmp_path, env):
            # The revision tag (the last one) has just appeared; the record is about to be written.
            latest = store.get_tag(NAME, "latest")
            assert latest is not None and store.get_tag(NAME, TINY_REVISION) == latest
            assert store.get_catalog(NAME) is None

        rerun = modelyard(args, env)
        assert rerun.returncode == 0, rerun.stderr
        assert "up to date" not in rerun.stdout + rerun.stderr  # the record was missing: not up to date
        record = store.get_catalog(NAME)
        assert record is not None and record["revision"] == TINY_REVISION
        assert record["index_digest"] == latest.digest  # built again to the very same image
        assert store.get_tag(NAME, "latest") == latest

        again = modelyard(args, env)
        assert again.returncode == 0 and "up to date" in again.stdout + again.stderr


def assert_nothing_half_published(store: Store) -> None:
    """Every tag reaches only blobs that are there, and every blob is what its digest says."""
    for info in store.backend.list(BLOBS_PREFIX):
        digest = "sha256:" + info.key.removeprefix(BLOBS_PREFIX)
        assert sha256_digest(store.backend.read(info.key)) == digest, f"{info.key} holds other bytes"
    for name in store.repositories():
        for tag in store.tags(name):
            descriptor = store.get_tag(name, tag)
            assert descriptor is not None
            assert missing(store, descriptor) == [], f"{name}:{tag} reaches missing blobs"
    record = store.get_catalog(NAME)
    assert record is None or store.has_blob(record["index_digest"])


# The moments between the kinds of writes a build makes, in publish order: before the layer, between
# the layer and the small blobs, between the blobs and the tags, between two tags, before the record.
KILL_POINTS = [("blobs/sha256/", 1), ("blobs/sha256/", 2), ("repositories/", 1), ("repositories/", 2), ("catalog/", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_killed_between_any_two_kinds_of_writes_then_run_again(hub: FixtureHub, tmp_path: Path, kind: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f'models:\n  - name: Org/Tiny-Model\n    sha: "{TINY_REVISION}"\n')
    model = ModelSpec("Org/Tiny-Model", TINY_REVISION)
    client = HubClient(endpoint=hub.url, backoff=0.01)
    reference = Store(LocalBackend(tmp_path / "reference"))
    (clean,) = build_models([model], reference, client, BatchOptions(tmp_path / "reference-cache"))
    with a_store(kind, tmp_path) as (location, env):
        env = {**env, "HF_ENDPOINT": hub.url}
        for point, (key, nth) in enumerate(KILL_POINTS):
            where = f"{location}-{point}"
            args = [
                "build",
                "--all",
                "--models",
                str(models),
                "--store",
                where,
                "--cache-dir",
                str(tmp_path / f"c{point}"),
            ]
            # A write: a rename into the local store; a PUT (object, part, copy) to the bucket.
            marker = f"{where}/{key}" if kind == "local" else f"PUT /{where.removeprefix('s3://')}/{key}"
            paused = start_paused(marker, args, tmp_path, env, nth=nth)
            assert paused.wait_until_paused(), paused.output()
            paused.kill()
            store = open_store(where)
            assert_nothing_half_published(store)
            # Running it again (what `modelyard build` does: sweep, then build) converges.
            sweep_uploads(store)
            (again,) = build_models([model], store, client, BatchOptions(tmp_path / f"c{point}"))
            assert again.status == "built" and again.detail == clean.detail, again.detail
            assert (
                store.get_tag(NAME, "latest") == store.get_tag(NAME, TINY_REVISION) == reference.get_tag(NAME, "latest")
            )
            record = store.get_catalog(NAME)
            assert record is not None and record["index_digest"] == clean.detail
            assert list(store.backend.list("uploads/")) == [] and list(store.backend.incomplete_uploads()) == []


def test_a_killed_layer_write_is_cleaned_by_the_next_build(tmp_path: Path) -> None:
    model = write_tree(tmp_path / "model", {"config.json": b"{}", "model.safetensors": os.urandom(24 * MiB)})
    store_root = tmp_path / "store"
    args = ["build", "--from-dir", str(model), "--name", "org/model", "--store", str(store_root)]
    # Stop it as the layer, complete and fsynced under uploads/, is about to be renamed under its digest.
    with paused_at("blobs/sha256/", args, tmp_path):
        (temporary,) = (store_root / "uploads").iterdir()
        assert temporary.stat().st_size > 24 * MiB
    assert temporary.exists()  # the kill left the layer-sized temporary behind

    rerun = modelyard(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 1 upload temporaries left by killed builds" in rerun.stderr
    assert list((store_root / "uploads").iterdir()) == []
    assert open_store(str(store_root)).get_tag("org/model", "latest") is not None


def test_a_multipart_copy_cut_short_is_swept_after_the_grace_period() -> None:
    # A layer over 5 GiB is copied to its digest key in parts: a kill during the copy leaves a
    # multipart upload under blobs/, never visible as an object, but stored (and billed).
    key = "blobs/sha256/" + "a" * 64
    with moto_s3():
        store = open_store("s3://models/copy")
        backend: S3Backend = store.backend  # type: ignore[assignment]
        backend.call("create_multipart_upload", key)
        (upload,) = backend.incomplete_uploads()
        assert upload.key == key
        assert sweep_uploads(store, now=upload.started + DEFAULT_GRACE / 2) == []  # it may be a copy going on
        removed = sweep_uploads(store, now=upload.started + DEFAULT_GRACE)
        assert [info.key for info in removed] == [key]
        assert list(backend.incomplete_uploads()) == [] and not store.has_blob("sha256:" + "a" * 64)
