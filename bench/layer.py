"""Layer build throughput: modelyard against the reference eStargz writer, same input, same run.

Input: one file of float16 weights (numpy standard normal), as a model directory for modelyard and as
a tar for the reference writer (``estargz-ref build``, level 9 = its default, and level 1). Each build
runs in its own process so its peak RSS is its own. Prints MB/s, compressed size, peak RSS and the
ratios; the targets (DESIGN §8) are ≥ 15x the reference's default-level speed, ≥ 300 MB/s on 2 cores,
a compressed size within 1% of the reference's, and peak RSS < 300 MB.

    ./dev bench layer [--size-mib 1024] [--workdir bench/out]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import REFERENCE_TOOL, MiB, child_peak_rss_mb, print_table, weights_benchmark
from pipeline.store import LocalBackend, Store


@dataclass
class Run:
    name: str
    seconds: float
    input_bytes: int
    output_bytes: int
    peak_rss_mb: float

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / self.seconds / 1e6


def make_tar(source: Path, tar_path: Path) -> None:
    if tar_path.exists() and tar_path.stat().st_mtime >= source.stat().st_mtime:
        return
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(source, arcname=source.name)


WRITE_LAYER = """
import sys
from pathlib import Path
from pipeline.cli import keep_freed_buffers
from pipeline.oci.estargz import write_layer
from pipeline.build.source import files_from_dir
keep_freed_buffers()
with open(sys.argv[2], "wb") as sink:
    write_layer(files_from_dir(Path(sys.argv[1])), sink)
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command to completion; its wall seconds and peak RSS (MB)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = process.communicate()
    if status != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stdout.decode()}\n{stderr.decode()}")
    return seconds, child_peak_rss_mb(usage)


def main(argv: list[str] | None = None) -> None:
    weights = weights_benchmark("bench layer", __doc__, argv)
    size, workdir, model_dir = weights.size, weights.workdir, weights.model_dir
    tar_path = workdir / f"weights-{size // MiB}MiB.tar"
    make_tar(weights.file, tar_path)
    tar_size = tar_path.stat().st_size

    runs = []
    # Like for like with the reference writer: the layer written to a plain file, no fsync.
    ours = workdir / "modelyard.tar.gz"
    seconds, rss = timed([sys.executable, "-c", WRITE_LAYER, str(model_dir), str(ours)])
    runs.append(Run("modelyard layer writer", seconds, size, ours.stat().st_size, rss))
    # What a user runs: the real command into a fresh local store, fsynced before it is published.
    store_dir = workdir / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    seconds, rss = timed(
        ["modelyard", "build", "--from-dir", str(model_dir), "--name", "bench/weights", "--store", str(store_dir)]
    )
    record = Store(LocalBackend(store_dir)).get_catalog("bench/weights")
    assert record is not None
    runs.append(Run("modelyard build (durable)", seconds, size, int(record["layer_size"]), rss))
    for level in (9, 1):
        out = workdir / f"reference-{level}.tar.gz"
        seconds, rss = timed([str(REFERENCE_TOOL), "build", str(tar_path), str(out), "--level", str(level)])
        runs.append(Run(f"reference level {level}", seconds, tar_size, out.stat().st_size, rss))
    verify = subprocess.run([str(REFERENCE_TOOL), "verify", str(ours)], capture_output=True, text=True)
    verified = json.loads(verify.stdout).get("ok")

    mine, durable, reference, reference_fast = runs
    print_table(
        ["writer", "seconds", "MB/s", "output bytes", "size ratio", "peak RSS MB"],
        [
            [
                r.name,
                f"{r.seconds:.2f}",
                f"{r.mb_per_s:.1f}",
                f"{r.output_bytes:,}",
                f"{r.output_bytes / r.input_bytes:.4f}",
                f"{r.peak_rss_mb:.0f}",
            ]
            for r in runs
        ],
    )
    print()
    print(f"cpus: {os.cpu_count()}; modelyard blob verified by the reference reader: {verified}")
    print(
        f"speed:  {mine.mb_per_s / reference.mb_per_s:.1f}x the reference at its default level 9 "
        f"(target >= 15x), {mine.mb_per_s / reference_fast.mb_per_s:.1f}x at level 1; {mine.mb_per_s:.0f} MB/s "
        f"(target >= 300 MB/s on 2 cores)"
    )
    print(
        f"size:   {mine.output_bytes / reference.output_bytes - 1:+.2%} vs the reference at level 9 (target within 1%)"
    )
    print(
        f"store:  {durable.mb_per_s:.0f} MB/s for the whole durable build into the store "
        f"({durable.mb_per_s / reference.mb_per_s:.1f}x the reference)"
    )
    print(f"memory: {mine.peak_rss_mb:.0f} MB peak RSS (target < 300 MB, independent of model size)")
