"""Registry throughput: `modelyard serve` against the CNCF distribution registry, same image, same run.

One image with a 1 MiB layer is built into a local store, exported as an OCI layout and pushed with
skopeo into Debian's ``docker-registry`` (distribution 2.8, filesystem storage, in a temp dir). Both
servers then take the same wrk loads, one after the other, with 64 connections:

    manifest   GET /v2/bench/model/manifests/latest   (by tag: what every pull starts with)
    blob       GET /v2/bench/model/blobs/<layer>      (the whole 1 MiB layer)
    ranged     GET of the layer with Range: bytes=4096-8191 (what a lazy reader sends)

Prints requests/s (MB/s for the blob), p99 latency and the ratio modelyard / CNCF for each, and
fails when any request errs. Targets (DESIGN §8): manifest GETs >= 1.0x, blob MB/s >= 0.8x.

    ./dev bench registry [--duration 60] [--connections 64] [--workdir bench/out/registry]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, print_table, require
from pipeline.build.publish import build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci.image import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, ImageMetadata
from pipeline.oci.layout import export_oci_layout
from pipeline.store import LocalBackend, Store
from tests.cncf_registry import cncf_registry, free_port

NAME = "bench/model"
LAYER_TARGET = 1024 * 1024  # the layer of random bytes ends up this size, give or take its framing
RANGE = "bytes=4096-8191"
ACCEPT = f"{MEDIA_TYPE_INDEX}, {MEDIA_TYPE_MANIFEST}"
TARGETS = {"manifest": 1.0, "blob": 0.8}


@dataclass(frozen=True)
class Load:
    name: str
    path: str
    headers: tuple[str, ...]
    expected_status: int
    body_bytes: int  # for MB/s


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx/3xx answers
    body_bytes: int

    @property
    def mb_per_second(self) -> float:
        return self.requests_per_second * self.body_bytes / 1e6


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench registry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds per load and server (default: 60)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "registry")
    args = parser.parse_args(argv)
    wrk, skopeo, cncf_binary = require("wrk"), require("skopeo"), require("docker-registry")

    workdir: Path = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    store, layer_digest, layer_size = build_image(workdir)
    loads = [
        Load("manifest", f"/v2/{NAME}/manifests/latest", (f"Accept: {ACCEPT}",), 200, 0),
        Load("blob", f"/v2/{NAME}/blobs/{layer_digest}", (), 200, layer_size),
        Load("ranged", f"/v2/{NAME}/blobs/{layer_digest}", (f"Range: {RANGE}",), 206, 4096),
    ]
    print(f"image {NAME}: layer {layer_digest} ({layer_size:,} bytes); {args.duration} s per load, "
          f"{args.connections} connections, {os.cpu_count()} CPUs")  # fmt: skip

    results: dict[tuple[str, str], Result] = {}
    with cncf_registry(cncf_binary, workdir / "cncf") as cncf, modelyard_serve(store, workdir) as ours_url:
        cncf_url = cncf.url
        push(skopeo, store, workdir, cncf_url)
        for load in loads:
            for server, url in (("cncf", cncf_url), ("modelyard", ours_url)):
                check(url, load, layer_digest)
                results[server, load.name] = run_wrk(wrk, url, load, args)
    report(loads, results)


def build_image(workdir: Path) -> tuple[Store, str, int]:
    """A store holding NAME:latest, whose one layer is about 1 MiB of incompressible bytes."""
    model = workdir / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b'{"model_type": "bench"}')
    (model / "weights.bin").write_bytes(os.urandom(LAYER_TARGET - 4096))  # tar and gzip framing fill the rest
    store = Store(LocalBackend(workdir / "store"))
    built = build_and_publish(
        store, files_from_dir(model), name=NAME, tags=["latest"], metadata=ImageMetadata(title=NAME)
    )
    return store, built.layer.digest, built.layer.size


def push(skopeo: str, store: Store, workdir: Path, cncf_url: str) -> None:
    """Copy the image, every platform, byte for byte into the CNCF registry via an OCI layout."""
    layout = workdir / "oci"
    export_oci_layout(store, NAME, "latest", layout)
    target = f"docker://{cncf_url.removeprefix('http://')}/{NAME}:latest"
    subprocess.run(
        [skopeo, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:latest", target],
        check=True,
        capture_output=True,
    )


def check(url: str, load: Load, layer_digest: str) -> None:
    """One request of the load, checked, before the load runs: a fast wrong answer measures nothing."""
    request = urllib.request.Request(url + load.path, headers=dict(h.split(": ", 1) for h in load.headers))
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        if response.status != load.expected_status:
            raise SystemExit(f"{url}{load.path}: status {response.status}, expected {load.expected_status}")
    if load.name == "blob" and "sha256:" + hashlib.sha256(body).hexdigest() != layer_digest:
        raise SystemExit(f"{url}{load.path}: the blob does not match its digest")


def run_wrk(wrk: str, url: str, load: Load, args: argparse.Namespace) -> Result:
    command = [wrk, "--latency", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    for header in load.headers:
        command += ["-H", header]
    output = subprocess.run([*command, url + load.path], check=True, capture_output=True, text=True).stdout
    return parse_wrk(output, load.body_bytes)


def parse_wrk(output: str, body_bytes: int) -> Result:
    """Requests/s, p99 latency and errors from wrk's report (``--latency`` adds the percentiles)."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    if rate is None or p99 is None:
        raise SystemExit(f"cannot read wrk's report:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Result(float(rate.group(1)), float(p99.group(1)) * scale, errors, body_bytes)


def report(loads: list[Load], results: dict[tuple[str, str], Result]) -> None:
    rows = []
    for load in loads:
        cncf, ours = results["cncf", load.name], results["modelyard", load.name]
        if load.name == "blob":
            unit, theirs_value, ours_value = "MB/s", cncf.mb_per_second, ours.mb_per_second
        else:
            unit, theirs_value, ours_value = "GET/s", cncf.requests_per_second, ours.requests_per_second
        target = TARGETS.get(load.name)
        rows.append(
            [
                f"{load.name} {unit}",
                f"{theirs_value:,.0f}",
                f"{ours_value:,.0f}",
                f"{ours_value / theirs_value:.2f}x",
                f">= {target:.1f}x" if target else "",
            ]
        )
        rows.append([f"{load.name} p99 ms", f"{cncf.p99_ms:.1f}", f"{ours.p99_ms:.1f}", "", ""])
        rows.append([f"{load.name} errors", str(cncf.errors), str(ours.errors), "", "0"])
    print()
    print_table(["", "cncf distribution", "modelyard", "ratio", "target"], rows)
    failed = [name for (server, name), result in results.items() if result.errors and server == "modelyard"]
    missed = [
        load.name
        for load in loads
        if load.name in TARGETS and _ratio(results, load) < TARGETS[load.name]
    ]  # fmt: skip
    print()
    print("errors: " + (", ".join(failed) if failed else "none"))
    print("targets: " + ("missed for " + ", ".join(missed) if missed else "met"))
    if failed or missed:
        sys.exit(1)


def _ratio(results: dict[tuple[str, str], Result], load: Load) -> float:
    cncf, ours = results["cncf", load.name], results["modelyard", load.name]
    if load.name == "blob":
        return ours.mb_per_second / cncf.mb_per_second
    return ours.requests_per_second / cncf.requests_per_second


@contextmanager
def modelyard_serve(store: Store, workdir: Path) -> Iterator[str]:
    """`modelyard serve` on a free port, its JSON access log going to a file as in production."""
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--store", store.backend.url(), "--port", str(port)]
    with open(workdir / "modelyard.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(url, process)
        yield url
    finally:
        _stop(process)


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server for {url} exited {process.returncode} before serving")
        try:
            urllib.request.urlopen(f"{url}/v2/", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise SystemExit(f"nothing serves {url} after {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
