"""Streaming from the Hub into the store (pipeline/hub/stream.py), through the real fixture hub and its faults.

Segments are 1 MiB here, so the 5 MiB weights of the tiny model span six ranged GETs in flight at once,
and every fault lands in the middle of a multi-segment file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build.batch import BatchOptions, ModelOutcome, build_models
from pipeline.cli.build import download_mode
from pipeline.errors import IntegrityError
from pipeline.hub.client import HubClient
from pipeline.hub.stream import MIN_SPLIT, HubStream, MiB, StreamOptions
from pipeline.models.file import ModelSpec
from pipeline.oci.estargz import write_layer
from pipeline.oci.references import reachable
from pipeline.store import LocalBackend, Store, blob_key, open_store
from pipeline.store.gc import collect_garbage
from tests.fixture_hub import MINILM_ID, MINILM_REVISION, FixtureHub, FixtureRepo, GeneratedFile, minilm_repo
from tests.registry_fixtures import S3, moto_s3
from tests.test_hub import TINY_FILES, TINY_REVISION, extract

SMALL_SEGMENTS = StreamOptions(connections=6, segment_size=1 * MiB)
WEIGHTS = "model.safetensors"
GENERATED_ID, GENERATED_REVISION = "org/generated", "3" * 40


def tiny(**fields: object) -> ModelSpec:
    return ModelSpec(**{"hf_id": "Org/Tiny-Model", "revision": TINY_REVISION, **fields})  # type: ignore[arg-type]


def generated_repo(size: int = 24 * MiB + 5) -> FixtureRepo:
    files = {"config.json": b'{"model_type": "generated"}\n', WEIGHTS: GeneratedFile(size, seed="stream-test")}
    return FixtureRepo(GENERATED_ID, GENERATED_REVISION, files)


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    repos = [
        FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES),
        FixtureRepo("gpt2", TINY_REVISION, {"config.json": b"{}", "vocab.json": b'{"a": 1}'}),
        FixtureRepo("org/gated", TINY_REVISION, {"config.json": b"{}", WEIGHTS: TINY_FILES[WEIGHTS]}, gated=True),
        minilm_repo(),
    ]
    with FixtureHub(repos, cdn=True) as running:
        yield running


def build(
    hub: FixtureHub, store: Store, tmp_path: Path, *models: ModelSpec, download: str = "stream", **options: object
) -> list[ModelOutcome]:
    client = HubClient(endpoint=hub.url, token=options.pop("token", None), backoff=0.01)  # type: ignore[arg-type]
    batch = BatchOptions(cache_dir=tmp_path / "cache", download=download, stream=SMALL_SEGMENTS, **options)  # type: ignore[arg-type]
    return build_models(list(models), store, client, batch)


def reference(hub: FixtureHub, tmp_path: Path, model: ModelSpec) -> str:
    """The index digest of ``model`` built through the download cache, with no faults."""
    (outcome,) = build(hub, Store(LocalBackend(tmp_path / "reference")), tmp_path, model, download="cache")
    assert outcome.status == "built", outcome.detail
    return outcome.detail


def store_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """A store location of the given backend (a moto S3 bucket under a fresh prefix), and its environment."""
    if backend == "local":
        return str(tmp_path / "store"), {}
    s3: S3 = request.getfixturevalue("s3")
    return f"s3://models/{uuid.uuid4().hex}", s3.env


def leftovers(store: Store) -> list[str]:
    """What a failed build could leave behind (but the record of why it failed): blobs, temporaries, tags."""
    keys = [i.key for i in store.backend.list("") if not i.key.startswith("failures/")]
    return keys + [u.key for u in store.backend.incomplete_uploads()]


def weights_served(hub: FixtureHub) -> list[tuple[str | None, int]]:
    return [(s.range, s.status) for s in hub.served if s.path == WEIGHTS]


def test_streamed_and_cached_builds_are_identical(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    minilm = ModelSpec(MINILM_ID, MINILM_REVISION)
    streamed = build(hub, store, tmp_path, tiny(), minilm)
    assert [o.status for o in streamed] == ["built", "built"], [o.detail for o in streamed]
    assert not list((tmp_path / "cache").glob("models--*"))  # streaming: no disk (only the build lock)
    cached = Store(LocalBackend(tmp_path / "cached"))
    assert [o.detail for o in build(hub, cached, tmp_path, tiny(), minilm, download="cache")] == [
        o.detail for o in streamed
    ]
    assert extract(store, "org/tiny-model", "latest", tmp_path / "x") == TINY_FILES
    assert store.get_catalog("org/tiny-model") == cached.get_catalog("org/tiny-model")  # model card included
    assert streamed[0].timings.keys() == {"list", "stream"}
    # The weights came as parallel 1 MiB ranges from the CDN, never asked twice.
    first = {r for r, _ in weights_served(hub)[:6]}
    assert first == {f"bytes={n * MiB}-{min((n + 1) * MiB, len(TINY_FILES[WEIGHTS])) - 1}" for n in range(6)}


def test_the_token_goes_to_the_hub_never_to_the_cdn(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.tokens.add("hf_good")
    gated = ModelSpec("org/gated", TINY_REVISION)
    assert build(hub, store, tmp_path, gated)[0].status == "failed"  # no token: the Hub says gated
    for download in ("stream", "cache"):
        hub.cdn_requests.clear()
        target = Store(LocalBackend(tmp_path / download))
        (outcome,) = build(hub, target, tmp_path, gated, download=download, token="hf_good")
        assert outcome.status == "built", outcome.detail
        assert hub.cdn_requests and all(r.authorization is None for r in hub.cdn_requests)
    assert Store(LocalBackend(tmp_path / "stream")).tags("org/gated") == Store(LocalBackend(tmp_path / "cache")).tags(
        "org/gated"
    )


@pytest.mark.parametrize("fault", ["drops", "short"])
def test_a_broken_body_resumes_from_where_it_stopped(hub: FixtureHub, store: Store, tmp_path: Path, fault: str) -> None:
    expected = reference(hub, tmp_path, tiny())
    hub.served.clear()
    getattr(hub.faults, fault)[WEIGHTS] = 3
    (outcome,) = build(hub, store, tmp_path, tiny())
    assert (outcome.status, outcome.detail) == ("built", expected)
    served = [r for r, _ in weights_served(hub)]
    assert None not in served  # never the whole file again
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in served if r]
    assert starts.count(0) == 1  # nor the first range: every retry went on from its last byte
    assert len([start for start in starts if start % MiB]) >= 3, served


def test_repeated_server_errors_fail_clearly_and_publish_nothing(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    hub.faults.errors[WEIGHTS] = 1000
    failed, built = build(hub, store, tmp_path, tiny(), ModelSpec("gpt2", TINY_REVISION))
    assert failed.status == "failed"
    assert failed.detail.startswith(f"Org/Tiny-Model: {WEIGHTS}: download failed 5 times in a row at byte ")
    assert failed.detail.endswith(f"of {len(TINY_FILES[WEIGHTS]):,}: HTTP 500 from {hub.cdn_url}")
    assert built.status == "built"  # the next model still was
    gpt2 = store.get_tag("gpt2", "latest")
    assert gpt2 is not None and store.tags("org/tiny-model") == []
    roots = [store.get_tag("gpt2", tag) for tag in store.tags("gpt2")]  # the image's tags and its formats'
    published = {
        blob_key(d.digest) for root in roots if root for d in reachable(store, root) if store.has_blob(d.digest)
    }
    assert sorted(k for k in leftovers(store) if k.startswith(("blobs/", "uploads/"))) == sorted(published)


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("path", [WEIGHTS, "config.json"])
def test_a_corrupted_byte_aborts_the_upload(
    hub: FixtureHub, tmp_path: Path, backend: str, path: str, request: pytest.FixtureRequest
) -> None:
    store = open_store(store_for(backend, tmp_path, request)[0])
    hub.faults.corrupt.add(path)
    (outcome,) = build(hub, store, tmp_path, tiny())
    assert outcome.status == "failed"
    kind = "sha256" if path == WEIGHTS else "git blob id"
    assert outcome.detail.startswith(f"Org/Tiny-Model: {path}: {kind} is ")
    assert ", the Hub says " in outcome.detail and outcome.detail.endswith("; not published")
    assert leftovers(store) == []  # no blob, no temporary, no open multipart upload, no tag
    failure = store.get_failure("org/tiny-model")
    assert failure is not None and failure["error"] == outcome.detail


def test_a_corrupt_lfs_file_stops_the_upload_at_its_end(tmp_path: Path) -> None:
    # The first of two weight files is corrupt: the build stops when that file ends, long before the
    # second one has been fetched (the window holds 6 MiB ahead), not once the whole layer is written.
    later = 64 * MiB
    files = {"a.safetensors": GeneratedFile(3 * MiB, seed="first"), "b.safetensors": GeneratedFile(later, seed="b")}
    with FixtureHub([FixtureRepo(GENERATED_ID, GENERATED_REVISION, files)]) as hub:
        hub.faults.corrupt.add("a.safetensors")
        store = Store(LocalBackend(tmp_path / "store"))
        (outcome,) = build(hub, store, tmp_path, ModelSpec(hf_id=GENERATED_ID, revision=GENERATED_REVISION))
        assert outcome.status == "failed" and outcome.detail.startswith(f"{GENERATED_ID}: a.safetensors: sha256 is ")
        fetched = 0
        for served in hub.served:
            if served.path == "b.safetensors" and served.range:
                first, last = served.range.removeprefix("bytes=").split("-")
                fetched += int(last) - int(first) + 1
        assert fetched <= later // 2, f"{fetched / MiB:.0f} MiB of the next file fetched"
        assert leftovers(store) == []


@pytest.mark.parametrize("delta", [100, -100])
def test_a_file_of_another_size_than_listed_is_refused(
    hub: FixtureHub, store: Store, tmp_path: Path, delta: int
) -> None:
    hub.faults.resized[WEIGHTS] = delta
    (outcome,) = build(hub, store, tmp_path, tiny())
    size = len(TINY_FILES[WEIGHTS])
    assert outcome.status == "failed"
    assert outcome.detail == (
        f"Org/Tiny-Model: {WEIGHTS}: the Hub lists {size:,} bytes, {hub.cdn_url} sends {size + delta:,}; not published"
    )
    assert leftovers(store) == []


def test_a_server_that_ignores_ranges(
    hub: FixtureHub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = reference(hub, tmp_path, tiny())
    hub.served.clear()
    hub.faults.ignore_ranges.add("*")
    with caplog.at_level(logging.WARNING):
        (outcome,) = build(hub, store, tmp_path, tiny())
    assert (outcome.status, outcome.detail) == ("built", expected)
    assert f"{hub.cdn_url} ignores Range requests (200 instead of 206)" in caplog.text
    assert {status for _, status in weights_served(hub)} == {200}


def test_a_slow_connection_does_not_set_the_pace(hub: FixtureHub, store: Store, tmp_path: Path) -> None:
    expected = reference(hub, tmp_path, tiny())
    hub.served.clear()
    hub.faults.slow[WEIGHTS] = 1  # the first range of the weights crawls at 256 KB/s
    (outcome,) = build(hub, store, tmp_path, tiny())
    assert (outcome.status, outcome.detail) == ("built", expected)
    served = [r for r, _ in weights_served(hub) if r]
    split = [r for r in served if int(r.removeprefix("bytes=").split("-")[0]) % MiB]
    assert split, served  # once the rest had arrived, the crawling range's second half went to another connection


def test_the_writer_may_read_in_any_order(hub: FixtureHub, tmp_path: Path) -> None:
    client = HubClient(endpoint=hub.url)
    snapshot = client.snapshot("Org/Tiny-Model", TINY_REVISION)
    with HubStream(client, snapshot, snapshot.files, options=SMALL_SEGMENTS) as stream:
        files = {f.path: f for f in stream.layer_files()}
        for path in ["onnx/model.onnx", WEIGHTS, "README.md", "config.json"]:  # not the tar order
            with files[path].open() as reader:
                assert reader.read(-1) == TINY_FILES[path]
        assert stream.read(next(f for f in snapshot.files if f.path == "README.md")) == TINY_FILES["README.md"]


def test_a_generated_file_streams_in_ranges(tmp_path: Path) -> None:
    repo = generated_repo()
    with FixtureHub([repo]) as hub:
        client = HubClient(endpoint=hub.url)
        snapshot = client.snapshot(GENERATED_ID, GENERATED_REVISION)
        options = StreamOptions(connections=3, segment_size=2 * MiB)
        with HubStream(client, snapshot, snapshot.files, options=options) as stream, open(tmp_path / "l", "wb") as sink:
            layer = write_layer(stream.layer_files(), sink)
        weights = next(f for f in layer.files if f.path == WEIGHTS)
        assert weights.digest == "sha256:" + repo.entries[WEIGHTS].etag
        starts = [int(r.removeprefix("bytes=").split("-")[0]) for r, _ in weights_served(hub) if r]
        aligned = [s for s in starts if s % (2 * MiB) == 0]
        assert sorted(aligned) == list(range(0, 26 * MiB, 2 * MiB))  # 24 MiB + 5 bytes in 13 ranges of 2 MiB
        # On a loaded machine a range that stalls for STALL_SECONDS is split: its second half is a 14th request.
        assert all(s % (2 * MiB) >= MIN_SPLIT for s in starts if s not in aligned), starts


def test_integrity_errors_name_model_file_expected_and_actual(hub: FixtureHub) -> None:
    client = HubClient(endpoint=hub.url)
    snapshot = client.snapshot("gpt2", TINY_REVISION)
    hub.faults.corrupt.add("vocab.json")
    with HubStream(client, snapshot, snapshot.files) as stream, pytest.raises(IntegrityError) as raised:
        stream.read(next(f for f in snapshot.files if f.path == "vocab.json"))
    listed = next(f for f in snapshot.files if f.path == "vocab.json").git_blob_id
    assert str(raised.value).startswith("gpt2: vocab.json: git blob id is ")
    assert str(raised.value).endswith(f", the Hub says {listed}; not published")


def test_download_mode_follows_the_store(tmp_path: Path) -> None:
    local, bucket = Store(LocalBackend(tmp_path)), open_store("s3://models/prefix")  # no request is made
    assert (download_mode("auto", local), download_mode("auto", bucket)) == ("cache", "stream")
    assert (download_mode("stream", local), download_mode("cache", bucket)) == ("stream", "cache")


# A streaming build killed mid-upload: nothing under a digest, gc sweeps its temporaries, a re-run converges.


@pytest.fixture
def s3() -> Iterator[S3]:
    with moto_s3() as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_killed_streaming_build_converges(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    location, s3_env = store_for(backend, tmp_path, request)
    models = tmp_path / "models.yaml"
    models.write_text(f'models:\n  - name: {GENERATED_ID}\n    sha: "{GENERATED_REVISION}"\n')
    with FixtureHub([generated_repo(48 * MiB)], rate=4e6) as hub:  # 4 MB/s a connection: about 2 s
        command = [sys.executable, "-m", "pipeline", "build", "--all", "--models", str(models), "--store", location]
        command += ["--download", "stream", "--cache-dir", str(tmp_path / "cache")]
        env = {**os.environ, **s3_env, "HF_ENDPOINT": hub.url}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        store = open_store(location)

        def uploading() -> bool:
            if backend == "s3":
                return bool(list(store.backend.incomplete_uploads()))
            return any(info.size > 8 * MiB for info in store.backend.list("uploads/"))

        deadline = time.monotonic() + 60
        while not uploading():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert store.tags("org/generated") == [] and list(store.backend.list("blobs/")) == []
        assert not list((tmp_path / "cache").glob("models--*"))

        report = collect_garbage(store, grace=0)
        assert any(info.key.startswith("uploads/") for info in report.removed)
        assert list(store.backend.list("uploads/")) == [] and list(store.backend.incomplete_uploads()) == []

        hub.rate = None
        rerun = subprocess.run(command, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        descriptor = store.get_tag("org/generated", "latest")
        assert descriptor is not None and store.has_blob(descriptor.digest)
        layer = store.get_catalog("org/generated")
        assert layer is not None and store.blob_size(layer["layer_digest"]) == layer["layer_size"]
        assert blob_key(layer["layer_digest"]) in [i.key for i in store.backend.list("blobs/")]
