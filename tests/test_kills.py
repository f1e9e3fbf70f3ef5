"""A real `modelyard build` killed with SIGKILL at the worst moments, on both stores: running it again converges."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.store import open_store
from tests.conftest import write_tree
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.killing import modelyard, paused_at
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
        args = ["build", "--models", str(models), "--store", location, "--cache-dir", str(tmp_path / "cache")]
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


def test_a_killed_layer_write_is_cleaned_by_the_next_build(tmp_path: Path) -> None:
    model = write_tree(tmp_path / "model", {"config.json": b"{}", "model.safetensors": os.urandom(48 * MiB)})
    store_root = tmp_path / "store"
    args = ["build", "--from-dir", str(model), "--name", "org/model", "--store", str(store_root)]
    # Stop it as the layer, complete and fsynced under uploads/, is about to be renamed under its digest.
    with paused_at("blobs/sha256/", args, tmp_path):
        (temporary,) = (store_root / "uploads").iterdir()
        assert temporary.stat().st_size > 48 * MiB
    assert temporary.exists()  # the kill left the layer-sized temporary behind

    rerun = modelyard(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 1 upload temporaries left by killed builds" in rerun.stderr
    assert list((store_root / "uploads").iterdir()) == []
    assert open_store(str(store_root)).get_tag("org/model", "latest") is not None
