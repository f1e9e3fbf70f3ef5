"""podman and buildah isolated under temp dirs, so tests (and other users of the machine) never meet.

A rootful podman keeps more than its storage machine-wide: its state and ``alive`` file under
``/run/libpod`` (which a ``podman system reset`` anywhere deletes, failing every other podman with
"creating runtime status file: open /run/libpod/alive"), its database under the storage root, its
locks in one shared-memory segment (``/dev/shm/libpod_lock``, which a fresh podman's refresh frees
whole), its temporary files in ``/var/tmp``. :class:`Podman` gives each of these a place of its own: a
``containers.conf`` (``CONTAINERS_CONF``: the only one read) naming ``tmp_dir``, ``static_dir``,
``volume_path`` and file locks under the sandbox, plus ``--root``/``--runroot``/``--tmpdir``, ``TMPDIR`` and
``XDG_RUNTIME_DIR``.

Example::

    with podman_sandbox(tmp_path / "storage") as podman:
        podman.build("-t", "localhost/busybox", str(context))
        podman("run", "--rm", "localhost/busybox", "true")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require_tool, run


@dataclass
class Podman:
    """podman and buildah on their own storage, state, locks and config, with what this sandbox allows."""

    root: Path  # images and containers (vfs), and podman's database
    state: Path  # short: podman keeps sockets under it (a socket path has at most 108 bytes)
    podman: str = field(default_factory=lambda: require_tool("podman"))
    buildah: str = field(default_factory=lambda: require_tool("buildah"))

    def __post_init__(self) -> None:
        for directory in ("run", "libpod", "tmp", "xdg"):
            (self.state / directory).mkdir(parents=True, exist_ok=True)
        (self.state / "xdg").chmod(0o700)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.state / "containers.conf").write_text(
            "[engine]\n"
            f'tmp_dir = "{self.state / "libpod"}"\n'
            f'static_dir = "{self.root / "libpod"}"\n'
            f'volume_path = "{self.root / "volumes"}"\n'
            'lock_type = "file"\n'
            'events_logger = "none"\n'
            'cgroup_manager = "cgroupfs"\n'
            # crun refuses this machine's hybrid cgroups
            'runtime = "runc"\n'
        )

    @property
    def storage(self) -> list[str]:
        return ["--root", str(self.root), "--runroot", str(self.state / "run"), "--storage-driver", "vfs"]

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {
            "CONTAINERS_CONF": str(self.state / "containers.conf"),
            "TMPDIR": str(self.state / "tmp"),
            "XDG_RUNTIME_DIR": str(self.state / "xdg"),
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        require_tool("runc")
        options = ["--tmpdir", str(self.state / "libpod"), "--runtime", "runc"]
        options += ["--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        return run(self.podman, *self.storage, *options, *args, env=self.env)

    def build(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.buildah, *self.storage, "build", "--isolation", "chroot", *args, env=self.env)

    def reset(self) -> None:
        """Remove every container and image, then the sandbox (vfs layers hold files of other users)."""
        options = [*self.storage, "--tmpdir", str(self.state / "libpod"), "--events-backend", "none"]
        for args in (("rm", "-f", "-a"), ("system", "reset", "-f")):
            subprocess.run([self.podman, *options, *args], capture_output=True, env=self.env)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def podman_sandbox(root: Path) -> Iterator[Podman]:
    """A :class:`Podman` with its storage under ``root`` and its state in a short temp dir, reset after."""
    podman = Podman(root, Path(tempfile.mkdtemp(prefix="my-podman-")))
    try:
        yield podman
    finally:
        podman.reset()
