"""Two builds sharing one download cache, and models that fail in ways nobody foresaw: the batch goes on."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build.batch import BatchOptions, build_models
from pipeline.hub.client import HubClient, RepoSnapshot
from pipeline.models.file import ModelSpec
from pipeline.store import Store, open_store
from tests.conftest import with_formats
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.killing import ROOT, start_paused
from tests.test_hub import TINY_FILES, TINY_REVISION

TINY, GPT2 = "org/tiny-model", "gpt2"


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    repos = [
        FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES),
        FixtureRepo("gpt2", TINY_REVISION, {"config.json": b"{}", "vocab.json": b'{"a": 1}'}),
    ]
    with FixtureHub(repos) as running:
        yield running


def test_two_builds_sharing_the_cache(hub: FixtureHub, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    entries = "".join(f'  - name: {name}\n    sha: "{TINY_REVISION}"\n' for name in ("Org/Tiny-Model", "gpt2"))
    models.write_text(f"models:\n{entries}")
    store_root = tmp_path / "store"
    args = [
        "build",
        "--all",
        "--models",
        str(models),
        "--store",
        str(store_root),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {"HF_ENDPOINT": hub.url}

    # The first build stops as it starts reading the downloaded weights into the layer...
    weights = f"models--Org--Tiny-Model/snapshots/{TINY_REVISION}/model.safetensors"
    first = start_paused(weights, args, tmp_path, env)
    assert first.wait_until_paused(), first.output()
    # ...while a second build of the same models file, with the same cache, starts.
    with open(tmp_path / "second.log", "wb") as log:
        second = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 120
    while second.poll() is None and "waiting for another build" not in (tmp_path / "second.log").read_text():
        assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()
        time.sleep(0.05)
    first.resume()
    assert first.process.wait(timeout=120) == 0, first.output()
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()

    second_log = (tmp_path / "second.log").read_text()
    assert f"waiting for another build of {TINY}" in second_log
    assert "skipped" in second_log and "FAILED" not in second_log + first.output()
    store = open_store(str(store_root))
    for name in (TINY, GPT2):
        assert store.tags(name) == with_formats(["latest", TINY_REVISION]) and store.get_catalog(name) is not None
    assert not (tmp_path / "cache" / "models--Org--Tiny-Model").exists()  # cleaned, once, by whoever built it


class BrokenHub(HubClient):
    """A Hub client with a bug that shows for one model only."""

    def snapshot(self, hf_id: str, revision: str) -> RepoSnapshot:
        if hf_id == "Org/Tiny-Model":
            raise FileNotFoundError(2, "No such file or directory", "/cache/models--Org--Tiny-Model/x")
        return super().snapshot(hf_id, revision)


def test_any_exception_fails_that_model_only(
    hub: FixtureHub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = [ModelSpec("Org/Tiny-Model", TINY_REVISION), ModelSpec("gpt2", TINY_REVISION)]
    with caplog.at_level(logging.ERROR):
        broken, built = build_models(models, store, BrokenHub(endpoint=hub.url), BatchOptions(tmp_path / "cache"))
    assert broken.status == "failed" and built.status == "built"
    assert broken.detail.startswith("unexpected FileNotFoundError: [Errno 2] No such file or directory")
    assert broken.detail.endswith("(the traceback is in the log)")
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"building {TINY} failed unexpectedly" and record.exc_info is not None
