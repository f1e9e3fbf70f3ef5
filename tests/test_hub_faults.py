"""A Hub that stalls, and repositories with more files than one page of the listing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pipeline.build.batch import BatchOptions, build_models
from pipeline.errors import HubError
from pipeline.hub.client import HubClient
from pipeline.models.file import ModelSpec
from pipeline.store import Store
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.test_hub import TINY_FILES, TINY_REVISION, extract

T = TypeVar("T")
MANY = 2_500  # files: three pages of the Hub's 1,000
MANY_FILES = {f"shards/{i // 100:02d}/part-{i:05d}.json": b'{"i": %d}\n' % i for i in range(MANY)}


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    repos = [
        FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES),
        FixtureRepo("gpt2", TINY_REVISION, {"config.json": b"{}"}),
        FixtureRepo("org/many", TINY_REVISION, MANY_FILES),
    ]
    with FixtureHub(repos, siblings_limit=1000) as running:  # model_info cut short, as the Hub may do
        running.faults.stall_seconds = 600  # far longer than the test may take: only a timeout ends it
        yield running


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``, which must return (or raise) within ``seconds``: a hang fails the test, never blocks the suite."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: no timeout"
    if failure:
        raise failure[0]
    return outcome[0]


def client(hub: FixtureHub, retries: int = 4, timeout: float = 2.0) -> HubClient:
    """A client that gives up on a stalled request soon (a loaded machine still answers within 2 s)."""
    return HubClient(endpoint=hub.url, retries=retries, backoff=0.01, timeout=timeout)


def requests_to(hub: FixtureHub, fragment: str) -> int:
    return sum(fragment in path for _, path in hub.requests)


@pytest.mark.parametrize("endpoint", ["api", "tree"])
def test_a_stalled_listing_times_out_and_is_retried(hub: FixtureHub, endpoint: str) -> None:
    hub.faults.stalls[endpoint] = 2
    snapshot = within(60, lambda: client(hub).snapshot("Org/Tiny-Model", TINY_REVISION))
    assert [f.path for f in snapshot.files] == sorted(TINY_FILES)
    assert hub.faults.stalls[endpoint] == 0
    assert requests_to(hub, "/revision/" if endpoint == "api" else "/tree/") == 3  # two timed out, one answered


def test_a_hub_that_keeps_stalling_fails_that_model_after_the_retries(
    hub: FixtureHub, store: Store, tmp_path: Path
) -> None:
    hub.faults.stalls["api"] = 3  # the tiny model's three attempts; gpt2's listing then answers
    models = [ModelSpec("Org/Tiny-Model", TINY_REVISION), ModelSpec("gpt2", TINY_REVISION)]
    stalled, built = within(
        120, lambda: build_models(models, store, client(hub, retries=2), BatchOptions(tmp_path / "cache"))
    )
    assert stalled.status == "failed" and stalled.detail.startswith(f"list Org/Tiny-Model@{TINY_REVISION[:12]}")
    assert "timed out" in stalled.detail
    assert built.status == "built"
    assert requests_to(hub, "/api/models/Org/Tiny-Model/revision/") == 3  # the first try and two retries


def test_the_file_list_follows_every_page(hub: FixtureHub, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.hub.client"):
        snapshot = client(hub, timeout=60).snapshot("org/many", TINY_REVISION)  # no stall here
    assert [f.path for f in snapshot.files] == sorted(MANY_FILES)  # model_info named only 1,000 of them
    assert all(f.size == len(MANY_FILES[f.path]) and f.git_blob_id for f in snapshot.files)
    # Each of the three pages was asked for, by the cursor the page before it linked to, and nothing more
    # than that but a retry: a loaded machine may be slow to answer a page once (a timeout, asked again).
    assert sorted(set(hub.tree_pages)) == [0, 1000, 2000]
    retries = sum("list the files" in record.getMessage() for record in caplog.records)
    assert 3 <= requests_to(hub, "/tree/") <= 3 + retries


def test_an_image_of_more_files_than_a_page(store: Store, tmp_path: Path) -> None:
    files = {name: data for name, data in list(MANY_FILES.items())[:130]}
    with FixtureHub([FixtureRepo("org/many", TINY_REVISION, files)], tree_page_size=50, siblings_limit=100) as hub:
        (outcome,) = build_models(
            [ModelSpec("org/many", TINY_REVISION)], store, client(hub, timeout=60), BatchOptions(tmp_path / "cache")
        )
    assert outcome.status == "built", outcome.detail
    assert extract(store, "org/many", "latest", tmp_path / "image") == files


def test_a_listing_that_leaves_files_out_is_refused(hub: FixtureHub) -> None:
    hub.faults.hidden_from_tree.add("model.safetensors")
    with pytest.raises(HubError, match=r"tree listing lacks 1 file.*first: model\.safetensors.*incomplete"):
        client(hub).snapshot("Org/Tiny-Model", TINY_REVISION)
