"""Streaming from the Hub into a bucket vs downloading alone, side by side in one run.

The fixture hub (tests/fixture_hub.py) runs in this process, throttled to 100 MB/s per connection (a
realistic Hub connection); a moto S3 server runs in its own process, or ``--bucket`` names a bucket of
your own (a real one shows what moto's CPU on the same cores hides); every measured command is a child
process, so its wall time and peak RSS are its own.

1. A 2 GiB model (float16 weights on disk, in ``--shards`` files, plus small files):
   - ``huggingface_hub.snapshot_download`` of the repository alone: the anchor;
   - ``modelyard build --download stream`` into the bucket: download and build in one pass;
   - ``modelyard build --download cache`` into the bucket: today's sequential path, download then build.
   Target (issue 10): streaming <= 1.2x the anchor. Both builds must give the same index digest.
2. With ``--big-gib N`` (20 for the issue's figure; long and CPU-heavy, run it once): an N GiB model whose
   weights are made by the fixture hub as they are served (never on disk), streamed into the bucket with
   ``--cache-dir`` on a 1 GiB tmpfs mounted for the run (root): peak RSS (target < 300 MB), peak use of
   the tmpfs, and the index digest against a cache-path build of the same model (cache on the big disk,
   into a local store: the digests do not depend on the store). The generated weights are sparse (1/16 of
   each page random) so that their layer fits moto, which holds a completing upload in memory twice.

    ./dev bench stream [--size-mib 2048] [--shards 1] [--rounds 2] [--big-gib 20] [--workdir bench/out]
    AWS_ENDPOINT_URL=https://<account>.r2.cloudflarestorage.com ./dev bench stream --bucket my-bench-bucket
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, MiB, child_peak_rss_mb, ensure_weights, print_table, process_cpu_seconds
from bench.s3 import CREDENTIALS, wait_for
from pipeline.store import open_store
from tests.cncf_registry import free_port
from tests.fixture_hub import Content, FixtureHub, FixtureRepo, GeneratedFile

RATE = 100e6  # bytes per second per connection
GiB = 1024 * MiB
MODEL_ID, MODEL_REVISION = "bench/stream", "5b" * 20
BIG_ID, BIG_REVISION = "bench/stream-big", "5c" * 20
SMALL_FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 2048}\n',
    "generation_config.json": b'{"do_sample": true}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"vocab": {}}}\n' * 20_000,
    "README.md": b"---\nlicense: apache-2.0\n---\n# A benchmark model\n",
}

SNAPSHOT_DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3])
"""


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    rss_mb: float
    cpu_seconds: float  # user + system: what the machine's load does not change
    server_cpu_seconds: float  # what the S3 server spent meanwhile (nan: not a process on this machine)
    hub_cpu_seconds: float  # what the fixture hub (this process) spent serving meanwhile


def timed(name: str, command: list[str], env: Mapping[str, str], server_pid: int | None) -> Run:
    """Run ``command``; its wall time, peak RSS and CPU, and the CPU the servers spent meanwhile."""
    server_before, hub_before = process_cpu_seconds(server_pid), sum(os.times()[:2])
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    server, hub = process_cpu_seconds(server_pid) - server_before, sum(os.times()[:2]) - hub_before
    stdout, stderr = process.communicate()
    if status != 0:
        sys.exit(
            f"{name} failed after {seconds:.0f} s (peak RSS {child_peak_rss_mb(usage):.0f} MB):\n"
            f"{stdout.decode()[-3000:]}\n{stderr.decode()[-3000:]}"
        )
    return Run(name, seconds, child_peak_rss_mb(usage), usage.ru_utime + usage.ru_stime, server, hub)


def build_command(store: str, download: str, cache: Path, models_file: Path, name: str) -> list[str]:
    return [
        *(sys.executable, "-m", "pipeline", "build", "--models", str(models_file), "--only", name, "--store", store),
        *("--download", download, "--cache-dir", str(cache), "--force"),
    ]


@dataclass(frozen=True)
class Bucket:
    name: str
    env: dict[str, str]  # what reaches it, beside the environment
    server_pid: int | None  # the S3 server's process when it runs on this machine: its CPU is counted

    def store(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"


@contextmanager
def moto_server(workdir: Path) -> Iterator[Bucket]:
    """A moto S3 server in its own process with a bucket "bench"."""
    port = free_port()
    log = open(workdir / "moto.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        wait_for(env["AWS_ENDPOINT_URL"])
        script = "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"
        subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, check=True)
        yield Bucket("bench", env, server.pid)
    finally:
        server.terminate()
        server.wait()
        log.close()


def index_digest(store: str, name: str, env: Mapping[str, str]) -> str:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        record = open_store(store).get_catalog(name)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert record is not None, f"no catalog record for {name} in {store}"
    return str(record["index_digest"])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def two_gib_model(args: argparse.Namespace, workdir: Path) -> FixtureRepo:
    size = args.size_mib * MiB
    files: dict[str, Content] = dict(SMALL_FILES)
    shard = size // args.shards
    for number in range(args.shards):
        path = workdir / f"stream-weights-{args.size_mib}MiB-in-{args.shards}" / f"{number:05d}.safetensors"
        print(f"preparing {path} ({shard // MiB} MiB of float16 weights) ...", flush=True)
        ensure_weights(path, shard)
        name = "model.safetensors" if args.shards == 1 else f"model-{number + 1:05d}-of-{args.shards:05d}.safetensors"
        files[name] = path
    return FixtureRepo(MODEL_ID, MODEL_REVISION, files)


def compare(args: argparse.Namespace, workdir: Path, hub: FixtureHub, bucket: Bucket, models_file: Path) -> None:
    size = sum(entry.size for entry in hub.repos[MODEL_ID].entries.values())
    s3 = bucket.env
    hf_env = {**s3, "HF_ENDPOINT": hub.url}
    runs: dict[str, list[Run]] = {}
    print(f"\n1. {size / 1e9:.2f} GB model ({args.shards} weight file(s)), hub at {RATE / 1e6:.0f} MB/s per connection")
    print(f"   before: {uptime()}", flush=True)
    for round_number in range(args.rounds):
        for name, command in (
            (
                "snapshot_download (anchor)",
                [sys.executable, "-c", SNAPSHOT_DOWNLOAD, MODEL_ID, MODEL_REVISION, str(workdir / "snapshot")],
            ),
            (
                "build --download stream",
                build_command(bucket.store("stream"), "stream", workdir / "unused", models_file, MODEL_ID),
            ),
            (
                "build --download cache",
                build_command(bucket.store("cache"), "cache", workdir / "cache", models_file, MODEL_ID),
            ),
            (
                "stream, local store",  # the same build without the S3 server's CPU on this machine
                build_command(str(workdir / "local-store"), "stream", workdir / "unused", models_file, MODEL_ID),
            ),
        ):
            shutil.rmtree(workdir / "snapshot", ignore_errors=True)
            shutil.rmtree(workdir / "local-store", ignore_errors=True)
            run = timed(name, command, hf_env, bucket.server_pid)
            print(
                f"   round {round_number + 1}: {name:<28} {run.seconds:6.1f} s  {run.rss_mb:5.0f} MB  CPU s: "
                f"{run.cpu_seconds:.1f} own, {run.server_cpu_seconds:.1f} S3 server, {run.hub_cpu_seconds:.1f} hub  "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            runs.setdefault(name, []).append(run)
    shutil.rmtree(workdir / "snapshot", ignore_errors=True)
    shutil.rmtree(workdir / "local-store", ignore_errors=True)
    print(f"   after:  {uptime()}")
    anchor = statistics.median(r.seconds for r in runs["snapshot_download (anchor)"])
    rows = []
    for name, measured in runs.items():
        seconds = statistics.median(r.seconds for r in measured)
        rows.append(
            [
                name,
                f"{seconds:.1f}",
                f"{size / seconds / 1e6:.0f}",
                f"{max(r.rss_mb for r in measured):.0f}",
                f"{statistics.median(r.cpu_seconds for r in measured):.1f}",
                f"{statistics.median(r.server_cpu_seconds for r in measured):.1f}",
                f"{statistics.median(r.hub_cpu_seconds for r in measured):.1f}",
                f"{seconds / anchor:.2f}x",
            ]
        )
    print()
    header = [
        "median of runs",
        "seconds",
        "MB/s",
        "peak RSS MB",
        "CPU s own",
        "S3 server",
        "hub",
        "vs snapshot_download",
    ]
    print_table(header, rows)
    streamed = index_digest(bucket.store("stream"), MODEL_ID, s3)
    cached = index_digest(bucket.store("cache"), MODEL_ID, s3)
    print(f"\n   index digests: streamed {streamed}, cached {cached}: {'EQUAL' if streamed == cached else 'DIFFERENT'}")
    ratio = statistics.median(r.seconds for r in runs["build --download stream"]) / anchor
    print(f"   streaming build into S3: {ratio:.2f}x snapshot_download alone (target <= 1.2x)")


@contextmanager
def tmpfs(path: Path, size: str = "1g") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "modelyard-bench", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


class PeakUse(threading.Thread):
    """Samples how much of a filesystem is used, every 50 ms, keeping the peak."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.peak, self._done = path, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, shutil.disk_usage(self.path).used)
            time.sleep(0.05)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, shutil.disk_usage(self.path).used)


def big_model(args: argparse.Namespace, workdir: Path, hub: FixtureHub, bucket: Bucket, models_file: Path) -> None:
    size = args.big_gib * GiB
    s3 = bucket.env
    hf_env = {**s3, "HF_ENDPOINT": hub.url}
    print(f"\n2. {size / 1e9:.1f} GB generated model, streamed into the bucket, --cache-dir on a 1 GiB tmpfs")
    print(f"   before: {uptime()}", flush=True)
    with tmpfs(workdir / "tmpfs-cache") as cache:
        monitor = PeakUse(cache)
        monitor.start()
        command = build_command(bucket.store("big"), "stream", cache, models_file, BIG_ID)
        stream = timed("stream", command, hf_env, bucket.server_pid)
        peak = monitor.stop()
        total = shutil.disk_usage(cache).total
    print(f"   after:  {uptime()}")
    print(
        f"   streamed: {stream.seconds:.0f} s ({size / stream.seconds / 1e6:.0f} MB/s), "
        f"peak RSS {stream.rss_mb:.0f} MB (target < 300 MB), tmpfs peak {peak / 1e6:.2f} MB of {total / 1e9:.2f} GB",
        flush=True,
    )
    streamed = index_digest(bucket.store("big"), BIG_ID, s3)
    print(f"   index digest of the streamed build: {streamed}", flush=True)
    if args.no_big_cache:
        print("   no cache-path build to compare with: --no-big-cache")
        return
    local_store, big_cache = workdir / "big-cache-store", workdir / "big-cache"
    free = shutil.disk_usage(workdir).free
    if free < size * 1.1:
        print(
            f"   no cache-path build: it needs the {size / 1e9:.1f} GB model on disk, {workdir} has "
            f"{free / 1e9:.1f} GB free; compare with a cache-path build of a smaller --big-gib instead"
        )
        return
    shutil.rmtree(local_store, ignore_errors=True)
    shutil.rmtree(big_cache, ignore_errors=True)
    cached = timed("cache", build_command(str(local_store), "cache", big_cache, models_file, BIG_ID), hf_env, None)
    digest = index_digest(str(local_store), BIG_ID, {})
    shutil.rmtree(local_store, ignore_errors=True)
    shutil.rmtree(big_cache, ignore_errors=True)
    print(
        f"   the cache path (download, then build, into a local store): {cached.seconds:.0f} s, "
        f"{cached.seconds / stream.seconds:.2f}x the streamed build; {uptime()}"
    )
    print(f"   index digests: streamed {streamed}, cached {digest}: {'EQUAL' if streamed == digest else 'DIFFERENT'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench stream", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="size of the model's weights (default: 2048)")
    parser.add_argument("--shards", type=int, default=1, help="weight files the model is split into (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each command, alternated (default: 2)")
    parser.add_argument(
        "--big-gib", type=int, default=0, help="also stream a generated model this big (20 for the issue)"
    )
    parser.add_argument("--no-big-cache", action="store_true", help="skip the cache-path build of the big model")
    parser.add_argument("--skip-small", action="store_true", help="only the big model")
    parser.add_argument(
        "--bucket",
        help="build into this existing bucket instead of a moto server's (credentials, region and "
        "AWS_ENDPOINT_URL from the environment, as for modelyard build); it keeps what the runs write",
    )
    parser.add_argument(
        "--server-pid", type=int, help="with --bucket: the S3 server's process, if it runs here, to count its CPU"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out", help="default: bench/out")
    args = parser.parse_args(argv)
    if args.server_pid is not None and not args.bucket:
        parser.error("--server-pid goes with --bucket (moto's process is counted by itself)")
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    models_file = workdir / "stream-models.yaml"
    models_file.write_text(
        f'models:\n  - name: {MODEL_ID}\n    sha: "{MODEL_REVISION}"\n  - name: {BIG_ID}\n    sha: "{BIG_REVISION}"\n'
    )
    repos = [] if args.skip_small else [two_gib_model(args, workdir)]
    if args.big_gib:
        weights = GeneratedFile(args.big_gib * GiB, seed="bench-stream-big", density=1 / 16)
        print(f"hashing the generated {args.big_gib} GiB weights once (cached in {workdir}) ...", flush=True)
        big = {"config.json": SMALL_FILES["config.json"], "model.safetensors": weights}
        repos.append(FixtureRepo(BIG_ID, BIG_REVISION, big, digest_cache=workdir))
    bucket = nullcontext(Bucket(args.bucket, {}, args.server_pid)) if args.bucket else moto_server(workdir)
    with FixtureHub(repos, rate=RATE) as hub, bucket as s3:
        if not args.skip_small:
            compare(args, workdir, hub, s3, models_file)
        if args.big_gib:
            big_model(args, workdir, hub, s3, models_file)
