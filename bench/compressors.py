"""Layer compressors side by side: format 2's choice and the candidates it was chosen from.

Every candidate deflates the members of the same layers through the real writer (its member encoding
swapped in, each build in its own process), on two inputs: 1 GiB of float16 weights and text (MiniLM's
tokenizer.json, repeated to 64 MiB). The anchor is the reference eStargz writer at its default level 9,
on the same inputs in the same run. Prints MB/s (wall, all cores) and MB per CPU-second (user + system:
what the work costs, steadier than wall time on a shared machine), each with its ratio to the reference's,
and the compressed size with its difference from the reference's.

``--cross-cpu`` checks each candidate's determinism for real instead: it deflates samples of both inputs
natively, under qemu-x86_64 (Nehalem: SSE only; Haswell: AVX2; Icelake-Server, whose AVX-512 qemu masks)
and under qemu-aarch64 (max, cortex-a72, neoverse-n1, a64fx; tests/arm64_python.py), and compares the bytes.

    ./dev bench compressors [--size-mib 1024] [--text-mib 64] [--only v2 libdeflate-1 ...] [--cross-cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import deflate
from isal import isal_zlib
from zlib_ng import zlib_ng

from bench.common import REFERENCE_TOOL, ROOT, MiB, ensure_weights, print_table, require
from pipeline.oci.estargz import deflate_member

X86_CPUS = ("Nehalem", "Haswell", "Icelake-Server")
ARM64_CPUS = ("max", "cortex-a72", "neoverse-n1", "a64fx")


@dataclass(frozen=True)
class Candidate:
    label: str
    encode: Callable[[bytes], bytes | bytearray]  # member content -> raw deflate stream


def _zlib_like(module: object, level: int, strategy: int = 0) -> Callable[[bytes], bytes]:
    def encode(content: bytes) -> bytes:
        compressor = module.compressobj(level, module.DEFLATED, -15, 8, strategy)  # type: ignore[attr-defined]
        return compressor.compress(content) + compressor.flush()  # type: ignore[no-any-return]

    return encode


CANDIDATES = {
    "v2": Candidate("format 2: libdeflate 1, stored if < 10%", deflate_member),
    "libdeflate-1": Candidate(f"libdeflate {deflate.__version__} level 1", lambda c: deflate.deflate_compress(c, 1)),
    "libdeflate-6": Candidate(f"libdeflate {deflate.__version__} level 6", lambda c: deflate.deflate_compress(c, 6)),
    "isal-1": Candidate("ISA-L (python-isal 1.9.1) level 1 = format 1", lambda c: isal_zlib.compress(c, 1, -15)),
    "zlib-ng-1": Candidate(f"zlib-ng {zlib_ng.ZLIBNG_VERSION} level 1", _zlib_like(zlib_ng, 1)),
    "zlib-ng-2": Candidate(f"zlib-ng {zlib_ng.ZLIBNG_VERSION} level 2", _zlib_like(zlib_ng, 2)),
    "zlib-ng-huffman": Candidate("zlib-ng Huffman only", _zlib_like(zlib_ng, 1, zlib_ng.Z_HUFFMAN_ONLY)),
    "zlib-1": Candidate(f"zlib {zlib.ZLIB_RUNTIME_VERSION} (the system's) level 1", _zlib_like(zlib, 1)),
    "stored": Candidate("stored blocks only", lambda c: deflate.deflate_compress(c, 0)),
}

WRITE_LAYER = """
import sys
from pathlib import Path
from bench.compressors import CANDIDATES
from pipeline.build.source import files_from_dir
from pipeline.cli import keep_freed_buffers
from pipeline.oci import estargz
keep_freed_buffers()
estargz.deflate_member = CANDIDATES[sys.argv[1]].encode
with open(sys.argv[3], "wb") as sink:
    estargz.write_layer(files_from_dir(Path(sys.argv[2])), sink)
"""


@dataclass(frozen=True)
class Result:
    seconds: float  # wall
    cpu_seconds: float  # user + system: what the work costs, whatever else the machine is doing
    input_bytes: int
    output_bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / self.seconds / 1e6

    @property
    def mb_per_cpu_s(self) -> float:
        return self.input_bytes / self.cpu_seconds / 1e6


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command to completion: its wall seconds and CPU seconds (user + system)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else b""
    if status != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr.decode()}")
    return seconds, usage.ru_utime + usage.ru_stime


def make_text(directory: Path, size: int) -> Path:
    """MiniLM's tokenizer.json repeated to ``size`` bytes, as a model directory of one file."""
    from tests.fixture_hub import minilm_directory

    path = directory / "tokenizer.json"
    if not (path.exists() and path.stat().st_size == size):
        text = (minilm_directory() / "tokenizer.json").read_bytes()
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes((text * (size // len(text) + 1))[:size])
    return path


def measure(model_dir: Path, size: int, workdir: Path, names: list[str]) -> dict[str, Result]:
    from bench.layer import make_tar

    results = {}
    tar = workdir / f"{model_dir.name}.tar"
    make_tar(next(model_dir.iterdir()), tar)
    out = workdir / "reference-9.tar.gz"
    seconds, cpu = timed([str(REFERENCE_TOOL), "build", str(tar), str(out), "--level", "9"])
    results["reference"] = Result(seconds, cpu, tar.stat().st_size, out.stat().st_size)
    for name in names:
        out = workdir / f"{name}.tar.gz"
        seconds, cpu = timed([sys.executable, "-c", WRITE_LAYER, name, str(model_dir), str(out)])
        results[name] = Result(seconds, cpu, size, out.stat().st_size)
        out.unlink()
    return results


def print_results(title: str, results: dict[str, Result]) -> None:
    reference = results["reference"]
    rows = []
    for name, result in results.items():
        label = "reference writer level 9 (anchor)" if name == "reference" else f"{CANDIDATES[name].label} [{name}]"
        rows.append(
            [
                label,
                f"{result.mb_per_s:.1f}",
                f"{result.mb_per_s / reference.mb_per_s:.1f}x",
                f"{result.mb_per_cpu_s:.1f}",
                f"{result.mb_per_cpu_s / reference.mb_per_cpu_s:.1f}x",
                f"{result.output_bytes:,}",
                f"{result.output_bytes / reference.output_bytes - 1:+.2%}",
            ]
        )
    print(f"\n{title}")
    header = ["writer", "MB/s", "vs ref", "MB per CPU-s", "vs ref", "compressed bytes", "size vs ref"]
    print_table(header, rows)


def sample_digests(samples: Path) -> dict[str, str]:
    """sha256 of each candidate's output over every sample: what must not depend on the CPU."""
    data = [path.read_bytes() for path in sorted(samples.iterdir())]
    return {name: hashlib.sha256(b"".join(c.encode(d) for d in data)).hexdigest() for name, c in CANDIDATES.items()}


def cross_cpu(weights: Path, text: Path, workdir: Path) -> None:
    from tests import arm64_python

    samples = workdir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    with open(weights, "rb") as handle:
        (samples / "float16").write_bytes(handle.read(4 * MiB))
    (samples / "text").write_bytes(text.read_bytes()[: 2 * MiB])
    child = ["-m", "bench.compressors", "--digests", str(samples)]
    native = sample_digests(samples)
    runs: dict[str, dict[str, str]] = {f"native {platform.machine()}": native}
    qemu_x86 = require("qemu-x86_64")
    for cpu in X86_CPUS:
        print(f"deflating the samples under qemu-x86_64 -cpu {cpu} ...", flush=True)
        runs[f"x86-64 {cpu}"] = _digests([qemu_x86, "-cpu", cpu, sys.executable, *child], None)
    arm64 = arm64_python.ensure(log=True)
    qemu_arm = require("qemu-aarch64")
    for cpu in ARM64_CPUS:
        print(f"deflating the samples under qemu-aarch64 -cpu {cpu} ...", flush=True)
        runs[f"aarch64 {cpu}"] = _digests(arm64.command(qemu_arm, cpu, *child), arm64.env())
    rows = [
        [name, *("same" if run[name] == native[name] else "DIFFERS" for run in list(runs.values())[1:])]
        for name in CANDIDATES
    ]
    print("\nthe same bytes as the native build?")
    print_table(["candidate", *list(runs)[1:]], rows)


def _digests(command: list[str], env: dict[str, str] | None) -> dict[str, str]:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench compressors", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="float16 weights (default: 1024)")
    parser.add_argument("--text-mib", type=int, default=64, help="text (default: 64)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out", help="default: bench/out")
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES), metavar="NAME")
    parser.add_argument("--cross-cpu", action="store_true", help="check determinism under qemu instead of speed")
    parser.add_argument("--digests", type=Path, help=argparse.SUPPRESS)  # the child of --cross-cpu
    args = parser.parse_args(argv)
    if args.digests:
        print(json.dumps(sample_digests(args.digests)))
        return
    require(REFERENCE_TOOL)
    weights_dir = args.workdir / f"weights-{args.size_mib}MiB"
    weights = weights_dir / "model.safetensors"
    ensure_weights(weights, args.size_mib * MiB)
    text_dir = args.workdir / f"text-{args.text_mib}MiB"
    text = make_text(text_dir, args.text_mib * MiB)
    if args.cross_cpu:
        cross_cpu(weights, text, args.workdir)
        return
    print(f"cpus: {os.cpu_count()}; load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    print_results(
        f"{args.size_mib} MiB of float16 weights", measure(weights_dir, args.size_mib * MiB, args.workdir, args.only)
    )
    print_results(
        f"{args.text_mib} MiB of text (tokenizer.json)", measure(text_dir, args.text_mib * MiB, args.workdir, args.only)
    )
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
