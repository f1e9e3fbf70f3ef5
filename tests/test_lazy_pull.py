"""The lazy pull, with a real runtime: containerd and a stargz snapshotter against `modelyard serve`.

containerd (Debian's) runs with our snapshotter (tests/go/stargz-grpc, Debian's stargz-snapshotter library)
as its proxy plugin; ``ctr-remote images rpull`` pulls the image the lazy way, and files are read through
the snapshotter's FUSE mount. What crossed the network is counted from the front-end's own access log (one
JSON line per request, with the body bytes). The same files built by the reference eStargz writer are
served beside ours, so every figure has its anchor.

The figures these tests measure are the README's ("Lazy pulling"); ``-s`` prints them.
"""

from __future__ import annotations

import itertools
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.oci.estargz import LayerResult
from pipeline.store import LocalBackend, Store
from tests.conftest import reference_build
from tests.lazy_runtime import Runtime, SnapshotterConfig, lazy_runtime, require_lazy_runtime
from tests.registry_fixtures import RunningRegistry, publish, publish_blob, running_registry

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
WEIGHTS = "model.safetensors"


def model_files() -> dict[str, bytes]:
    """A small model: config files around float16 weights (which sort before the tokenizer, as in many
    model repositories: a prefetch of the layer's first bytes would take the weights)."""
    weights = np.random.default_rng(0).standard_normal(12 * MiB).astype(np.float16).tobytes()  # 24 MiB
    return {
        "config.json": b'{"architectures": ["BertModel"], "hidden_size": 384}\n',
        "1_Pooling/config.json": b'{"word_embedding_dimension": 384}\n',
        WEIGHTS: weights,
        "tokenizer.json": json.dumps({"model": {"vocab": {f"token{i}": i for i in range(20000)}}}).encode(),
    }


@dataclass
class Served:
    registry: RunningRegistry
    files: dict[str, bytes]
    layers: dict[str, LayerResult]  # "modelyard" and "reference": the same files, each writer's layer

    def ref(self, writer: str) -> str:
        return f"{self.registry.host}/lazy/{writer}:latest"

    def fetched(self, writer: str) -> int:
        """Layer bytes sent so far, by the front-end's access log."""
        time.sleep(0.5)  # the log is written in batches, every 0.2 s
        digest = self.layers[writer].digest
        lines = self.registry.access_log()
        return sum(line["bytes"] for line in lines if line["method"] == "GET" and line["path"].endswith(digest))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_lazy_runtime()  # before building anything
    workdir = tmp_path_factory.mktemp("lazy")
    store = Store(LocalBackend(workdir / "store"))
    files = model_files()
    ours = publish(store, workdir / "model", files, name="lazy/modelyard").layer
    source = workdir / "model.tar"
    with tarfile.open(source, "w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            archive.add(workdir / "model" / name, arcname=name)
    reference = reference_build(source, workdir / "reference.tar.gz")  # the library's defaults: level 9, 4 MiB
    publish_blob(store, workdir / "reference.tar.gz", reference, "lazy/reference")
    with running_registry(str(workdir / "store"), workdir / "server") as registry:
        yield Served(registry, files, {"modelyard": ours, "reference": reference})


@dataclass
class Pulled:
    """An image pulled lazily into a fresh runtime, mounted."""

    served: Served
    writer: str
    runtime: Runtime
    root: Path  # the image's files, through the lazy mount
    start: int  # the access log's count of layer bytes before the pull

    @property
    def layer(self) -> LayerResult:
        return self.served.layers[self.writer]

    def fetched(self) -> int:
        """Layer bytes fetched since the pull began (the mount included)."""
        return self.served.fetched(self.writer) - self.start


Pull = Callable[[str, SnapshotterConfig], Pulled]


@pytest.fixture
def pull(served: Served, tmp_path: Path) -> Iterator[Pull]:
    """``pull(writer, config)``: rpull that writer's image into a runtime whose snapshotter is so
    configured, and mount it; every runtime stops when the test ends."""
    count = itertools.count()
    with ExitStack() as runtimes:

        def start(writer: str, config: SnapshotterConfig) -> Pulled:
            runtime = runtimes.enter_context(lazy_runtime(tmp_path / f"{writer}-{next(count)}", config))
            start = served.fetched(writer)
            runtime.rpull(served.ref(writer))
            root = runtime.mount(served.layers[writer].diff_id, runtime.workdir / "mnt")
            assert runtime.prepared() == ["true"], runtime.snapshotter_log.read_text()  # lazily, never the fallback
            return Pulled(served, writer, runtime, root, start)

        yield start


ON_DEMAND = SnapshotterConfig(prefetch=False, background_fetch=False)


def read_whole(path: Path) -> bytes:
    """Read as a copy does: sequentially, in 1 MiB reads (the kernel splits them into FUSE requests)."""
    with open(path, "rb", buffering=0) as handle:
        return b"".join(iter(lambda: handle.read(MiB), b""))


def report(what: str, pulled: Pulled) -> int:
    """Print what was fetched (``pytest -s`` shows it); return it."""
    fetched, size = pulled.fetched(), pulled.layer.size
    print(f"\n{pulled.writer}, {what}: {fetched:,} bytes of the {size:,}-byte layer ({fetched / size:.2%})")
    return fetched


SETTINGS = {
    "defaults (50 kB fetches)": ON_DEMAND,
    "[blob] chunk_size = 4 MiB": SnapshotterConfig(prefetch=False, background_fetch=False, fetch_chunk_size=4 * MiB),
}


@pytest.mark.parametrize("writer", ["modelyard", "reference"])
def test_reading_through_the_lazy_mount(served: Served, pull: Pull, writer: str) -> None:
    """``cat`` of a small file fetches a sliver of the layer; every file read through the mount is the
    source, and the TOC and the landmark do not show.

    Reading a large file whole, the snapshotter's defaults fetch some ranges twice, for the reference
    writer's layer as for ours: concurrent FUSE reads of a chunk that is not cached yet each decompress it,
    and each asks for what another is already fetching (the library dedups only identical requests). A
    fetch granularity of one chunk (4 MiB) makes those requests identical: each byte is fetched once, for
    4 MiB per small file read.
    """
    size = served.layers[writer].size
    for name, config in SETTINGS.items():
        pulled = pull(writer, config)
        assert (pulled.root / "config.json").read_bytes() == served.files["config.json"]
        small = report(f"{name}: pull, mount, cat config.json", pulled)
        seen = {p.relative_to(pulled.root).as_posix(): p for p in pulled.root.rglob("*") if p.is_file()}
        assert sorted(seen) == sorted(served.files)
        for path, file in seen.items():
            assert read_whole(file) == served.files[path], path
        whole = report(f"{name}: then every file, {len(served.files[WEIGHTS]):,} bytes of weights", pulled)
        if config.fetch_chunk_size:
            assert small < 2 * config.fetch_chunk_size + size / 100
            # Each byte once, but for one chunk: a full run at load 20 once fetched one 4 MiB chunk twice
            # (29.4 MB for a 25.2 MB layer; not traced inside the snapshotter library).
            assert whole < size + config.fetch_chunk_size + size / 100
        else:
            assert small < size / 100
            assert whole < 2 * size  # some bytes twice, but bounded


@pytest.mark.parametrize("writer", ["modelyard", "reference"])
def test_prefetch_fetches_nothing_the_layer_does_not_ask_for(served: Served, pull: Pull, writer: str) -> None:
    """ctr-remote labels each layer with a 10 MiB prefetch; the snapshotter then prefetches, unless the
    layer's TOC has a ``.no.prefetch.landmark``, that much of the layer and every file starting in it
    whole: the weights, here. Both writers' layers carry the landmark, ours after the tar's end."""
    pulled = pull(writer, SnapshotterConfig(prefetch=True, background_fetch=False))
    pulled.runtime.wait_for_log("completed to prefetch")
    assert report("prefetch on (ctr-remote's 10 MiB), nothing read", pulled) < pulled.layer.size / 100


def test_background_fetch_takes_the_whole_layer(pull: Pull) -> None:
    """The snapshotter's default: after mounting, fetch the whole layer in the background, read or not.
    For a model image, that is the weights: the README says to turn it off."""
    pulled = pull("modelyard", SnapshotterConfig(prefetch=True, background_fetch=True))
    pulled.runtime.wait_for_log("completed to fetch all layer data in background", timeout=120)
    assert report("background fetch on (the default), nothing read", pulled) >= pulled.layer.size * 0.99


def test_a_plain_pull_gets_the_whole_layer_once_and_only_the_model_files(served: Served, tmp_path: Path) -> None:
    """Without the snapshotter, containerd downloads the layer and its applier unpacks it: it stops at the
    tar's end-of-archive marker, so the TOC and the landmark never reach the image."""
    with lazy_runtime(tmp_path / "plain", ON_DEMAND) as runtime:
        start = served.fetched("modelyard")
        root = runtime.pull_and_mount_plainly(served.ref("modelyard"), tmp_path / "plain-mnt")
        fetched = served.fetched("modelyard") - start
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        assert files == served.files
        assert runtime.prepared() == []  # the snapshotter was never asked
    size = served.layers["modelyard"].size
    print(f"\nmodelyard, plain ctr pull: {fetched:,} bytes of the {size:,}-byte layer ({fetched / size:.2%})")
    assert size <= fetched < 1.01 * size
