"""A lazy-pulling runtime: Debian's containerd with our stargz snapshotter (tests/go/stargz-grpc) as its
proxy plugin, each with its own root, state and socket under a temp dir, so nothing touches the machine's
own containerd.

``ctr-remote images rpull`` (Debian's stargz-snapshotter package) pulls as a lazy-pulling client does: it
labels each layer so that the snapshotter mounts it from the registry over FUSE instead of containerd
downloading it. A read-only view of the image's snapshot, bind-mounted on a directory, then reads files
through that mount, fetching from the registry only what is read.

Example::

    with lazy_runtime(tmp_path, SnapshotterConfig(prefetch=False, background_fetch=False)) as runtime:
        runtime.rpull("127.0.0.1:5000/org/model:latest")
        root = runtime.mount(layer.diff_id, tmp_path / "mnt")
        print((root / "config.json").read_text())
        assert runtime.prepared() == ["true"]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_tool, run

SNAPSHOTTER = "stargz"


@dataclass(frozen=True)
class SnapshotterConfig:
    """The snapshotter settings that decide what is fetched before and besides what is read.

    ``prefetch``: fetch, right after mounting, what the layer's landmark asks for (nothing with
    ``.no.prefetch.landmark``), or else the prefetch size the client labels the layer with (ctr-remote:
    10 MiB, and every file that starts in it, whole). ``background_fetch``: then fetch the rest of the
    layer in the background (the upstream default: on).
    """

    prefetch: bool = True
    background_fetch: bool = True
    fetch_chunk_size: int = 0  # [blob] chunk_size: the granularity of registry fetches (0: the library's 50,000)

    def toml(self) -> str:
        lines = [
            f"noprefetch = {str(not self.prefetch).lower()}",
            f"no_background_fetch = {str(not self.background_fetch).lower()}",
        ]
        if self.fetch_chunk_size:
            lines += ["[blob]", f"chunk_size = {self.fetch_chunk_size}"]
        return "\n".join(lines) + "\n"


@dataclass
class Runtime:
    workdir: Path
    address: str  # containerd's socket
    snapshotter_log: Path
    mounts: list[Path] = field(default_factory=list)

    def ctr(self, *args: str) -> str:
        return run(require_tool("ctr"), "--address", self.address, *args).stdout

    def rpull(self, ref: str) -> None:
        """Pull ``ref`` (``HOST:PORT/NAME:TAG``, plain HTTP) the lazy way: layers stay in the registry."""
        run(require_tool("ctr-remote"), "--address", self.address, "images", "rpull", "--plain-http", ref)

    def pull_and_mount_plainly(self, ref: str, target: Path) -> Path:
        """Pull ``ref`` as a client without lazy pulling does (containerd downloads and unpacks each layer
        into its overlayfs snapshotter) and mount the image on ``target``."""
        self.ctr("images", "pull", "--plain-http", ref)
        target.mkdir(parents=True, exist_ok=True)
        self.ctr("images", "mount", ref, str(target))
        self.mounts.append(target)
        return target

    def mount(self, chain_id: str, target: Path) -> Path:
        """Bind-mount a read-only view of the snapshot ``chain_id`` (a one-layer image: its DiffID) on
        ``target``. (ctr 1.6's own ``images mount`` ignores --snapshotter, so the view is made here.)"""
        target.mkdir(parents=True, exist_ok=True)
        key = f"view-{target.name}"
        mounts = json.loads(self.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "view", "--mounts", key, chain_id))
        for mount in mounts:
            run("mount", "-t", mount["Type"], "-o", ",".join(mount["Options"]), mount["Source"], str(target))
            self.mounts.append(target)
        return target

    def log_lines(self) -> list[dict[str, str]]:
        lines = self.snapshotter_log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def prepared(self) -> list[str]:
        """Every ``remote-snapshot-prepared`` the snapshotter logged: "true" (mounted lazily) or "false"
        (fell back to containerd downloading the layer)."""
        return [line["remote-snapshot-prepared"] for line in self.log_lines() if "remote-snapshot-prepared" in line]

    def wait_for_log(self, message: str, timeout: float = 60) -> None:
        """Wait until the snapshotter logs ``message`` (for instance "completed to prefetch")."""
        deadline = time.monotonic() + timeout
        while not any(line.get("msg") == message for line in self.log_lines()):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the snapshotter did not log {message!r} within {timeout} s:\n{self.snapshotter_log.read_text()}"
                )
            time.sleep(0.1)


def require_lazy_runtime() -> None:
    """Skip (fail in CI) where a FUSE-mounting snapshotter cannot run: it needs root and /dev/fuse."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("root (to mount FUSE and overlay)")
    if not os.path.exists("/dev/fuse"):
        reasons.append("/dev/fuse (the kernel's FUSE module)")
    if reasons:
        message = f"the lazy-pull test needs {' and '.join(reasons)}"
        if os.environ.get("MODELYARD_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def lazy_runtime(workdir: Path, config: SnapshotterConfig) -> Iterator[Runtime]:
    """Start our snapshotter and a containerd that uses it; on exit unmount everything and stop both."""
    require_lazy_runtime()
    snapshotter_binary, containerd_binary = require_tool("stargz-grpc"), require_tool("containerd")
    for client in ("ctr", "ctr-remote"):
        require_tool(client)
    workdir.mkdir(parents=True, exist_ok=True)
    # A unix socket path has at most 104 bytes, fewer than a pytest temp dir can take: sockets go in a
    # short directory of their own.
    sockets = Path(tempfile.mkdtemp(prefix="modelyard-lazy-"))
    socket = sockets / "stargz.sock"
    (workdir / "stargz.toml").write_text(config.toml())
    address = str(sockets / "containerd.sock")
    (workdir / "containerd.toml").write_text(
        "version = 2\n"
        f'root = "{workdir / "containerd-root"}"\n'
        f'state = "{workdir / "containerd-state"}"\n'
        # CRI would start CNI networking and a streaming server: nothing a pull needs.
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
        f'[proxy_plugins.{SNAPSHOTTER}]\n  type = "snapshot"\n  address = "{socket}"\n'
    )
    snapshotter_log, containerd_log = workdir / "stargz.log", workdir / "containerd.log"
    processes: list[subprocess.Popen[bytes]] = []
    runtime = Runtime(workdir, address, snapshotter_log)
    try:
        with open(snapshotter_log, "wb") as log:
            command = [snapshotter_binary, "--root", str(workdir / "stargz-root"), "--address", str(socket)]
            command += ["--config", str(workdir / "stargz.toml"), "--log-level", "debug"]
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        _wait_for("stargz-grpc", socket, processes[-1], snapshotter_log)
        with open(containerd_log, "wb") as log:
            command = [containerd_binary, "--config", str(workdir / "containerd.toml")]
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        _wait_for("containerd", Path(address), processes[-1], containerd_log)
        yield runtime
    finally:
        for target in reversed(runtime.mounts):
            subprocess.run(["umount", str(target)], capture_output=True)
        for process in reversed(processes):  # containerd first, then the snapshotter (it unmounts its layers)
            _stop(process)
        _unmount_everything_under(workdir)
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_for(name: str, socket: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Wait until ``process`` listens on ``socket``; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if process.poll() is not None:
            pytest.fail(f"{name} exited {process.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            pytest.fail(f"{name} did not open {socket} within {timeout} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unmount_everything_under(workdir: Path) -> None:
    """What a killed snapshotter leaves mounted (FUSE layers, views) would keep the temp dir from going."""
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in sorted((p for p in points if p.startswith(str(workdir))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
