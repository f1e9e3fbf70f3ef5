"""What the benchmarks share: where the anchor tools are, and how results are printed."""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TOOL = ROOT / ".tools" / "bin" / "estargz-ref"
MiB = 1024 * 1024


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a running process, all its threads (``/proc/<pid>/stat``); nan without one."""
    if pid is None:
        return math.nan
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_peak_rss_mb(usage: resource.struct_rusage) -> float:
    """Peak RSS of a waited-for child, in MB (Linux reports ru_maxrss in KiB)."""
    return usage.ru_maxrss * 1024 / 1e6


def require(path_or_name: str | Path) -> str:
    found = str(path_or_name) if Path(path_or_name).exists() else shutil.which(str(path_or_name))
    if found is None:
        raise SystemExit(f"{path_or_name} is missing: run ./dev setup")
    return found


@dataclass(frozen=True)
class Weights:
    """The benchmarks' input: one file of float16 weights, in a model directory of its own."""

    size: int
    workdir: Path

    @property
    def model_dir(self) -> Path:
        return self.workdir / f"weights-{self.size // MiB}MiB"

    @property
    def file(self) -> Path:
        return self.model_dir / "model.safetensors"


def weights_benchmark(prog: str, doc: str | None, argv: list[str] | None) -> Weights:
    """Parse a benchmark's common options (--size-mib, --workdir) and make sure its weights exist."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the weights (default: 1024)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out", help="default: bench/out")
    args = parser.parse_args(argv)
    weights = Weights(args.size_mib * MiB, args.workdir)
    print(f"preparing {args.size_mib} MiB of float16 weights in {weights.model_dir} ...", flush=True)
    ensure_weights(weights.file, weights.size)
    return weights


def make_weights(path: Path, size: int) -> None:
    """float16 standard-normal values: what most weights look like to a compressor."""
    import numpy as np

    if path.exists() and path.stat().st_size == size:
        return
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            count = min(remaining, 64 * MiB) // 2
            handle.write(rng.standard_normal(count).astype(np.float16).tobytes())
            remaining -= count * 2


def ensure_weights(path: Path, size: int) -> None:
    """Generate the weights in a child process: a child's peak RSS starts from its parent's (fork), so the
    benchmark process stays small and the RSS of the builds it measures stays theirs."""
    script = (
        f"from pathlib import Path; from bench.common import make_weights; make_weights(Path({str(path)!r}), {size})"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
