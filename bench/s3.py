"""Publishing to S3: modelyard's streaming upload against boto3's own upload_file, same blob, same run.

A moto S3 server runs in its own process on 127.0.0.1. Each measured upload runs in a child process
(peak RSS is its own):

- boto3 ``upload_file`` of the layer blob (the anchor: multipart, threads, from a file it can seek);
- modelyard's streaming scheme with the same bytes: a multipart upload to a temporary key as the bytes
  arrive (no seeking, no second copy on disk), then a server-side copy under the digest;
- the whole ``modelyard build --store s3://...``: layer build and streaming upload together.

Target (issue 5): the streaming scheme >= 0.9x upload_file's speed, peak RSS < 300 MB whatever the size.

    ./dev bench s3 [--size-mib 1024] [--workdir bench/out]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

from bench.common import print_table, weights_benchmark
from bench.layer import timed
from pipeline.store import LocalBackend, Store, blob_key
from tests.cncf_registry import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

UPLOAD_FILE = """
import sys, boto3
boto3.client("s3").upload_file(sys.argv[1], "bench", "anchor/blob")
"""

STREAM = """
import sys, time
from pathlib import Path
from pipeline.cli import keep_freed_buffers
from pipeline.store import open_store
keep_freed_buffers()
store = open_store("s3://bench/stream")
started = time.perf_counter()
with open(sys.argv[1], "rb") as source, store.blob_writer() as blob:
    while piece := source.read(4 * 1024 * 1024):  # as the layer writer hands it over: 4 MiB at a time
        blob.write(piece)
    streamed = time.perf_counter()
    blob.commit(expected=sys.argv[2])  # last part, complete, copy under the digest, delete the temporary
Path(sys.argv[3]).write_text(f"{streamed - started} {time.perf_counter() - streamed}")
"""


def main(argv: list[str] | None = None) -> None:
    weights = weights_benchmark("bench s3", __doc__, argv)
    size, workdir, model_dir = weights.size, weights.workdir, weights.model_dir

    print("building the layer into a local store (the blob to upload) ...", flush=True)
    local = workdir / "s3-local-store"
    shutil.rmtree(local, ignore_errors=True)
    timed(["modelyard", "build", "--from-dir", str(model_dir), "--name", "bench/weights", "--store", str(local)])
    record = Store(LocalBackend(local)).get_catalog("bench/weights")
    assert record is not None
    blob, digest = local / blob_key(record["layer_digest"]), str(record["layer_digest"])

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    try:
        wait_for(endpoint)
        subprocess.run(
            [sys.executable, "-c", "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"],
            env=env,
            check=True,
        )
        os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        rows = []
        for name, command, count in (
            ("boto3 upload_file (anchor)", [sys.executable, "-c", UPLOAD_FILE, str(blob)], blob.stat().st_size),
            (
                "modelyard streaming upload",
                [sys.executable, "-c", STREAM, str(blob), digest, str(workdir / "s3-phases")],
                blob.stat().st_size,
            ),
            (
                "modelyard build --store s3://",
                [
                    "modelyard",
                    "build",
                    "--from-dir",
                    str(model_dir),
                    "--name",
                    "bench/weights",
                    "--store",
                    "s3://bench/build",
                ],
                size,
            ),
        ):
            seconds, rss = timed(command)
            rows.append((name, seconds, count, rss))
    finally:
        server.terminate()
        server.wait()
    print_table(
        ["upload", "seconds", "MB/s", "peak RSS MB"],
        [[name, f"{s:.2f}", f"{n / s / 1e6:.0f}", f"{rss:.0f}"] for name, s, n, rss in rows],
    )
    anchor, stream = rows[0], rows[1]
    ratio = (stream[2] / stream[1]) / (anchor[2] / anchor[1])
    print(
        f"\nstreaming upload: {ratio:.2f}x upload_file's speed (target >= 0.9x), {stream[3]:.0f} MB peak RSS "
        f"(target < 300 MB); moto in its own process on the same {os.cpu_count()} cores"
    )
    streaming, commit = (float(x) for x in (workdir / "s3-phases").read_text().split())
    print(
        f"  of which: parts streamed {streaming:.2f} s; commit {commit:.2f} s (the last part, completing the upload, "
        "and the server-side copy under the digest that keeps partial objects out of blobs/)"
    )


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the S3 server at {url} did not start") from None
            time.sleep(0.1)
