"""`modelyard build` through the fixture Hub: MiniLM and a 1 GiB synthetic repository.

The fixture hub (tests/fixture_hub.py) runs in this process on 127.0.0.1; `modelyard build` runs as a
child, so its peak RSS is its own. For each model it prints wall time, MB/s and peak RSS, the time of
each phase (list, download, build), and how the build's CPU time divides between hashing, compression
and store writes (each measured alone, single-threaded, on the same bytes).

    ./dev bench hub [--size-mib 1024] [--workdir bench/out]
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import deflate

from bench.common import child_peak_rss_mb, print_table, weights_benchmark
from pipeline.oci.estargz import deflate_member
from pipeline.oci.format import CHUNK_SIZE
from tests.fixture_hub import MINILM_ID, MINILM_REVISION, FixtureHub, FixtureRepo, minilm_repo

SYNTHETIC_ID = "bench/synthetic-1g"
SYNTHETIC_REVISION = "5a" * 20


def build(models_file: Path, name: str, store: Path, cache: Path, endpoint: str) -> tuple[float, float, str]:
    """Run `modelyard build --only name`; (seconds, peak RSS MB, its stderr)."""
    command = ["modelyard", "build", "--models", str(models_file), "--only", name, "--store", str(store)]
    command += ["--cache-dir", str(cache)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_ENDPOINT": endpoint}
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = process.communicate()
    if status != 0:
        sys.exit(f"modelyard build {name} failed:\n{stdout.decode()}\n{stderr.decode()}")
    return seconds, child_peak_rss_mb(usage), stderr.decode()


def cpu_split(path: Path, workdir: Path) -> dict[str, float]:
    """CPU seconds of each part of the build's work on one file, measured alone."""
    timings = {"hashing": 0.0, "compression": 0.0, "store writes": 0.0}
    compressed = []
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            started = time.process_time()
            for _ in range(3):  # chunk digest, file digest, DiffID
                hashlib.sha256(chunk).digest()
            timings["hashing"] += time.process_time() - started
            started = time.process_time()
            member = deflate_member(chunk)
            deflate.crc32(chunk)
            timings["compression"] += time.process_time() - started
            started = time.process_time()
            hashlib.sha256(member).digest()  # blob digest
            timings["hashing"] += time.process_time() - started
            compressed.append(member)
            if len(compressed) == 16:
                timings["store writes"] += write_out(compressed, workdir)
                compressed.clear()
    timings["store writes"] += write_out(compressed, workdir)
    return timings


def write_out(members: list[bytes], workdir: Path) -> float:
    started = time.perf_counter()
    with open(workdir / "write-test", "ab") as handle:
        for member in members:
            handle.write(member)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    bench = weights_benchmark("bench hub", __doc__, argv)
    weights, workdir = bench.file, bench.workdir
    models_file = workdir / "hub-models.yaml"
    models_file.write_text(
        f"models:\n  - name: {MINILM_ID}\n    sha: {MINILM_REVISION}\n"
        f"  - name: {SYNTHETIC_ID}\n    sha: {SYNTHETIC_REVISION}\n"
    )
    synthetic = FixtureRepo(SYNTHETIC_ID, SYNTHETIC_REVISION, {"config.json": b"{}", "model.safetensors": weights})
    print("starting the fixture hub (hashing the synthetic weights once) ...", flush=True)
    rows = []
    with FixtureHub([minilm_repo(), synthetic]) as hub:
        for name, size in ((MINILM_ID, None), (SYNTHETIC_ID, weights.stat().st_size + 2)):
            store, cache = workdir / "hub-store", workdir / "hub-cache"
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            seconds, rss, log = build(models_file, name, store, cache, hub.url)
            phases = dict(re.findall(r"(list|download|build) ([\d.]+) s", log))
            if size is None:
                size = sum(p.stat().st_size for p in minilm_directory_files())
            rows.append(
                [
                    name,
                    f"{size / 1e6:,.1f}",
                    f"{seconds:.2f}",
                    f"{size / seconds / 1e6:.0f}",
                    f"{rss:.0f}",
                    phases.get("list", "?"),
                    phases.get("download", "?"),
                    phases.get("build", "?"),
                ]
            )
    print_table(["model", "MB", "seconds", "MB/s", "peak RSS MB", "list s", "download s", "build s"], rows)
    split = cpu_split(weights, workdir)
    (workdir / "write-test").unlink(missing_ok=True)
    total = sum(split.values())
    print()
    print("build work on the synthetic weights, each part measured alone (single thread; the build overlaps them):")
    for part, seconds in split.items():
        print(f"  {part:<13} {seconds:6.2f} s  {seconds / total:5.1%}")


def minilm_directory_files() -> list[Path]:
    from tests.fixture_hub import minilm_directory

    return [p for p in minilm_directory().rglob("*") if p.is_file()]
