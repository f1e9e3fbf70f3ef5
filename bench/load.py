"""Load and slowloris: `modelyard serve` under a mixed wrk load, alone and then beside a slowloris attack.

One image with a 1 MiB layer is built into a local store and served by `modelyard serve` (its
defaults: 10 s head timeout, 30 s idle timeout, 1,024 connections). Two runs, side by side:

    anchor   wrk, 64 connections, mixed load (bench/load.lua: manifest GETs, 4 KiB ranged GETs of the
             layer, whole-layer GETs), for --duration seconds
    attack   the same load while a slowloris holds 500 more connections open the whole time: half send
             a request head one header line at a time and never finish it, half send nothing; each
             one the server lets go is opened again at once

In both, a probe opens a fresh connection every second and GETs the manifest by tag, as a new client
would; its latency is the one a normal user sees. The slowloris runs at the lowest CPU priority (nice
19): a real attacker runs on other machines, and what generating the attack costs must not be taken
from the server on this one. Prints requests/s, p99 and errors of the load, the
probe's p50/p99/max, the attack's connections, and the ratio attack/anchor. Fails when anything errs
or a probe takes 100 ms or more.

    ./dev bench load [--duration 60] [--connections 64] [--attackers 500]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, print_table, require
from bench.registry import ACCEPT, NAME, Result, build_image, modelyard_serve, parse_wrk

PROBE_LIMIT_MS = 100.0
LUA = ROOT / "bench" / "load.lua"
TRICKLE_SECONDS = 3.0  # a slowloris sends its next header line this often (under the 10 s head timeout)


@dataclass
class Probes:
    latencies_ms: list[float] = field(default_factory=list)  # connect to the last byte of the answer
    connect_ms: list[float] = field(default_factory=list)  # of which, the TCP connect
    errors: list[str] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Run:
    load: Result
    probes: Probes
    attack: dict[str, int] | None


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds per run (default: 60)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    parser.add_argument("--attackers", type=int, default=500, help="slowloris connections (default: 500)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "load")
    args = parser.parse_args(argv)
    wrk = require("wrk")
    workdir: Path = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    store, layer_digest, layer_size = build_image(workdir)
    manifest, blob = f"/v2/{NAME}/manifests/latest", f"/v2/{NAME}/blobs/{layer_digest}"
    print(
        f"image {NAME}: layer {layer_size:,} bytes; {args.duration} s per run, {args.connections} connections, "
        f"{args.attackers} slowloris connections in the attack run; {os.cpu_count()} CPUs, load {_load()}",
        flush=True,
    )
    runs: dict[str, Run] = {}
    with modelyard_serve(store, workdir) as url:
        host, port = url.removeprefix("http://").split(":")
        for name, attackers in (("anchor", 0), ("attack", args.attackers)):
            attack = start_attack(host, int(port), attackers, args.duration + 5) if attackers else None
            time.sleep(3 if attack else 0)  # let the attack reach its strength first
            probes = Probes()
            stop = threading.Event()
            prober = threading.Thread(target=probe, args=(host, int(port), manifest, probes, stop), daemon=True)
            prober.start()
            command = [wrk, "--latency", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
            command += ["-s", str(LUA), url, "--", manifest, blob, str(layer_size)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            stop.set()
            prober.join()
            report = finish_attack(attack) if attack else None
            runs[name] = Run(parse_wrk(output, 0), probes, report)
            print(f"{name}: done, load {_load()}", flush=True)
    failed = print_report(runs)
    sys.exit(1 if failed else 0)


def probe(host: str, port: int, path: str, probes: Probes, stop: threading.Event) -> None:
    """Every second, a new connection and one manifest GET: how long a normal client waits."""
    while not stop.wait(1.0):
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.connect()
            connected = time.perf_counter()
            connection.request("GET", path, headers={"Accept": ACCEPT, "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status != 200 or not body or not response.getheader("Docker-Content-Digest"):
                probes.errors.append(f"status {response.status}")
                continue
        except OSError as error:
            probes.errors.append(repr(error))
            continue
        probes.latencies_ms.append((time.perf_counter() - started) * 1000)
        probes.connect_ms.append((connected - started) * 1000)


def start_attack(host: str, port: int, connections: int, seconds: float) -> subprocess.Popen[str]:
    """The slowloris, in a process of its own at the lowest CPU priority: a real attacker runs on other
    machines, so what it costs to generate the attack must not be taken from the server here."""
    code = f"from bench.load import attack; attack({host!r}, {port}, {connections}, {seconds})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(19)
    )


def finish_attack(process: subprocess.Popen[str]) -> dict[str, int]:
    output, _ = process.communicate(timeout=120)
    report: dict[str, int] = json.loads(output.strip().splitlines()[-1])
    return report


def attack(host: str, port: int, connections: int, seconds: float) -> None:
    """Hold ``connections`` slowloris connections open for ``seconds``; print what happened as JSON."""
    counts = {"opened": 0, "let_go_with_408": 0, "let_go_silently": 0, "refused": 0, "open_now": 0, "most_open": 0}

    async def one(index: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                counts["refused"] += 1
                await asyncio.sleep(0.1)
                continue
            counts["opened"] += 1
            counts["open_now"] += 1
            counts["most_open"] = max(counts["most_open"], counts["open_now"])
            try:
                answer = await hold(reader, writer, index % 2 == 0, deadline)
                if answer is not None:
                    counts["let_go_with_408" if answer.startswith(b"HTTP/1.1 408") else "let_go_silently"] += 1
            except OSError:
                counts["let_go_silently"] += 1
            finally:
                counts["open_now"] -= 1
                writer.close()

    async def hold(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bool, deadline: float
    ) -> bytes | None:
        """Keep the connection busy-looking until the server lets it go (its answer) or the attack ends (None)."""
        if trickle:
            writer.write(b"GET /v2/ HTTP/1.1\r\nHost: slowloris\r\n")
        line = 0
        while (left := deadline - time.monotonic()) > 0:
            try:
                return await asyncio.wait_for(reader.read(65536), min(left, TRICKLE_SECONDS))
            except TimeoutError:
                if trickle:
                    line += 1
                    writer.write(b"X-Slow-%d: %d\r\n" % (line, line))  # never the blank line that ends a head
        return None

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(index, deadline) for index in range(connections)))

    asyncio.run(run())
    counts.pop("open_now")
    print(json.dumps(counts), flush=True)


def print_report(runs: dict[str, Run]) -> bool:
    """The table; True when something failed."""
    anchor, attacked = runs["anchor"], runs["attack"]
    rows = []

    def row(label: str, values: list[str], ratio: str = "") -> None:
        rows.append([label, *values, ratio])

    row("load requests/s", [f"{r.load.requests_per_second:,.0f}" for r in (anchor, attacked)],
        f"{attacked.load.requests_per_second / anchor.load.requests_per_second:.2f}x")  # fmt: skip
    row("load p99 ms", [f"{r.load.p99_ms:.1f}" for r in (anchor, attacked)])
    row("load errors", [str(r.load.errors) for r in (anchor, attacked)])
    for label, fraction in (("probe p50 ms", 0.5), ("probe p99 ms", 0.99)):
        row(label, [f"{r.probes.percentile(fraction):.1f}" for r in (anchor, attacked)])
    row("probe max ms", [f"{max(r.probes.latencies_ms, default=float('nan')):.1f}" for r in (anchor, attacked)])
    row("probe connect max ms", [f"{max(r.probes.connect_ms, default=float('nan')):.1f}" for r in (anchor, attacked)])
    row("probes (errors)", [f"{len(r.probes.latencies_ms)} ({len(r.probes.errors)})" for r in (anchor, attacked)])
    if attacked.attack is not None:
        for key, value in attacked.attack.items():
            row(f"slowloris {key.replace('_', ' ')}", ["", f"{value:,}"])
    print()
    print_table(["", "anchor (load only)", "attack (load + slowloris)", "attack/anchor"], rows)
    problems = []
    for name, run in runs.items():
        if run.load.errors or run.probes.errors:
            problems.append(f"{name}: {run.load.errors} load errors, probe errors {run.probes.errors[:3]}")
        slowest = max(run.probes.latencies_ms, default=float("inf"))
        if slowest >= PROBE_LIMIT_MS:
            problems.append(f"{name}: a probe took {slowest:.0f} ms (limit {PROBE_LIMIT_MS:.0f})")
    median = statistics.median(attacked.probes.latencies_ms) if attacked.probes.latencies_ms else float("nan")
    print()
    print(f"probe median under attack {median:.1f} ms; " + ("; ".join(problems) if problems else "zero errors"))
    return bool(problems)


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())
