"""Virtual blobs: GET throughput against a stored blob of the same size, and storage per model for every format.

One model (float16 weights plus a config) is built into a local store with its ModelKit and
ModelPack. A second blob of the weights' size (the same bytes, but for the first eight) is stored
as an ordinary blob: the anchor. `modelyard serve` then answers, alternately in the same run:

    stored    GET /v2/bench/model/blobs/<anchor>     read from the store
    virtual   GET /v2/bench/model/blobs/<weights>    the ModelPack's raw layer: chunks decompressed
                                                     out of the eStargz layer, each checked

with wrk at 1 and at 4 connections. Prints MB/s, the ratio virtual / stored (target >= 0.7x,
DESIGN §8), and the bytes each scheme stores for the three formats: modelyard (one layer, virtual
raw layers), Debian's docker-registry after `modelyard push` of every format (it stores the raw
layers as blobs), and three formats built separately (a second gzip layer for the ModelKit).

    ./dev bench virtual [--size-mib 256] [--duration 10] [--workdir bench/out/virtual]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench.common import ROOT, MiB, Weights, ensure_weights, print_table, require
from bench.registry import Load, modelyard_serve, run_wrk
from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci.image import ImageMetadata
from pipeline.remote.push import push_images
from pipeline.store import LocalBackend, Store
from tests.cncf_registry import cncf_registry

NAME = "bench/model"
TARGET = 0.7
CONNECTIONS = (1, 4)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench virtual", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="size of the weights (default: 256)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of stored and virtual (default: 3)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "virtual")
    args = parser.parse_args(argv)
    wrk, cncf_binary = require("wrk"), require("docker-registry")
    weights = Weights(args.size_mib * MiB, args.workdir.parent)
    print(f"preparing {args.size_mib} MiB of float16 weights in {weights.model_dir} ...", flush=True)
    ensure_weights(weights.file, weights.size)
    (weights.model_dir / "config.json").write_bytes(b'{"model_type": "bench"}\n')

    workdir: Path = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    store = Store(LocalBackend(workdir / "store"))
    built = build_and_publish(
        store, files_from_dir(weights.model_dir), name=NAME, tags=["latest"], metadata=ImageMetadata(title=NAME)
    )
    virtual_digest = "sha256:" + hashlib.sha256(weights.file.read_bytes()).hexdigest()
    anchor_digest = store_anchor(store, weights.file)
    print(f"weights {weights.size:,} bytes: virtual {virtual_digest}, stored anchor {anchor_digest}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip

    loads = {
        "stored": Load("stored", f"/v2/{NAME}/blobs/{anchor_digest}", (), 200, weights.size),
        "virtual": Load("virtual", f"/v2/{NAME}/blobs/{virtual_digest}", (), 200, weights.size),
    }
    best: dict[tuple[str, int], float] = {}
    with modelyard_serve(store, workdir) as url:
        for name, load in loads.items():
            check(url + load.path, anchor_digest if name == "stored" else virtual_digest)
        for connections in CONNECTIONS:
            options = argparse.Namespace(threads=min(2, connections), connections=connections, duration=args.duration)
            for _ in range(args.rounds):
                for name, load in loads.items():
                    result = run_wrk(wrk, url, load, options)
                    if result.errors:
                        raise SystemExit(f"{name}: {result.errors} errors")
                    best[name, connections] = max(best.get((name, connections), 0.0), result.mb_per_second)
    rows = []
    missed = []
    for connections in CONNECTIONS:
        stored, virtual = best["stored", connections], best["virtual", connections]
        ratio = virtual / stored
        missed += [connections] if ratio < TARGET else []
        rows.append(
            [f"{connections} connection(s)", f"{stored:,.0f}", f"{virtual:,.0f}", f"{ratio:.2f}x", f">= {TARGET}x"]
        )
    print()
    print_table(["GET MB/s (best of rounds)", "stored blob", "virtual blob", "ratio", "target"], rows)

    print()
    storage_report(store, built, workdir, cncf_binary)
    print(f"\nload after: {os.getloadavg()[0]:.1f}")
    if missed:
        print(f"target missed at {', '.join(map(str, missed))} connection(s)")
        sys.exit(1)


def store_anchor(store: Store, weights: Path) -> str:
    """A stored blob as large as the weights and as compressible: the weights, but for their first bytes."""
    with store.blob_writer() as blob, open(weights, "rb") as source:
        blob.write(b"modelyar")
        source.seek(8)
        while piece := source.read(8 * MiB):
            blob.write(piece)
        return blob.commit()


def check(url: str, digest: str) -> None:
    """One GET, checked against its digest, before the load runs: a fast wrong answer measures nothing."""
    received = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=120) as response:
        while piece := response.read(8 * MiB):
            received.update(piece)
    if "sha256:" + received.hexdigest() != digest:
        raise SystemExit(f"{url}: the blob does not match its digest")


def storage_report(store: Store, built: BuiltImage, workdir: Path, cncf_binary: str) -> None:
    """Bytes stored for the image, its ModelKit and its ModelPack, three ways."""
    # The anchor blob is no part of the model: it is left out of modelyard's bytes, and not pushed.
    ours = sum(info.size for info in store.backend.list("blobs/")) - _anchor_size(store, built)
    with cncf_registry(cncf_binary, workdir / "cncf") as registry:
        push_images(store, registry.host, names=[NAME], insecure=True)
        theirs = _du(workdir / "cncf" / "data" / "docker" / "registry" / "v2" / "blobs")
    files = sum(f.size for f in built.layer.files)
    separate = ours + built.layer.size + files  # a ModelKit layer of its own, and the raw files stored
    rows = [
        ["modelyard (one layer, virtual raw layers)", f"{ours:,}", "1.00x"],
        ["docker-registry after `modelyard push` of all formats", f"{theirs:,}", f"{theirs / ours:.2f}x"],
        ["each format built and stored separately", f"{separate:,}", f"{separate / ours:.2f}x"],
    ]
    print_table([f"bytes stored for 3 formats of a {files:,}-byte model", "bytes", "vs modelyard"], rows)


def _anchor_size(store: Store, built: BuiltImage) -> int:
    model = built.blob_digests
    return sum(
        info.size for info in store.backend.list("blobs/") if f"sha256:{info.key.rsplit('/', 1)[1]}" not in model
    )


def _du(path: Path) -> int:
    """Bytes of the blobs under a docker-registry blob directory (each is a file named ``data``)."""
    return sum(p.stat().st_size for p in path.rglob("data") if p.is_file())
