"""An arm64 Python that runs the pipeline under qemu-aarch64, for the cross-CPU golden test.

A Debian 12 arm64 root made by ``debootstrap --foreign`` (only Python and what it needs, unpacked on
this machine: no chroot, no binfmt_misc) plus the pinned arm64 wheels of the compiled packages the layer
writer imports, unpacked for ``PYTHONPATH``. qemu-user runs the root's interpreter with ``-L ROOT``.

It is made once and kept under ``.tools/arm64-python/<key>``, where the key covers everything it is
made from (the Debian suite and packages, the wheels' pins in the lock files, this recipe), so a
changed lock file makes a new one. Making it needs root (debootstrap), debootstrap and a Debian mirror
(``MODELYARD_DEBIAN_MIRROR``, default deb.debian.org); ``./dev setup`` installs debootstrap and qemu-user.

    python -m tests.arm64_python            # make it (or find it) and print how to run it
    qemu-aarch64 -L ROOT ROOT/usr/bin/python3.11 -m tests.golden /tmp/golden   # with the printed env
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".tools" / "arm64-python"
LOCK_FILES = (REPO / "requirements.lock", REPO / "requirements-dev.lock")

SUITE = "bookworm"
# The interpreter and its standard library; debootstrap adds Debian's required packages (libc, ...).
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib")
# Compiled packages the layer writer imports (everything else it imports is the standard library), and
# the other compressors bench/compressors.py compares; their versions come from the lock files.
WHEELS = ("deflate", "isal", "zlib-ng")
RECIPE = "1"  # bump when the way the root is made changes


@dataclass(frozen=True)
class Arm64Python:
    """A ready arm64 root and wheel directory: how to run its interpreter under qemu."""

    root: Path
    site: Path

    def command(self, qemu: str, cpu: str, *args: str) -> list[str]:
        """The command line that runs ``python3.11 ARGS`` on an emulated ``cpu``."""
        return [qemu, "-L", str(self.root), "-cpu", cpu, str(self.root / "usr/bin/python3.11"), *args]

    def env(self) -> dict[str, str]:
        """A clean environment: the wheels and this repository on the path, bytecode cached aside."""
        return {
            "PATH": "/usr/bin:/bin",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": f"{self.site}:{REPO}",
            "PYTHONNOUSERSITE": "1",
            "PYTHONPYCACHEPREFIX": str(self.site.parent / "pycache"),
        }


def pinned(names: tuple[str, ...], locks: tuple[Path, ...] = LOCK_FILES) -> list[str]:
    """``name==version`` of each package, as the lock files pin it."""
    pins = {}
    for lock in locks:
        for line in lock.read_text().splitlines():
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if match:
                pins[_canonical(match[1])] = line.strip()
    missing = [name for name in names if _canonical(name) not in pins]
    if missing:
        raise LookupError(f"no pin for {', '.join(missing)} in {', '.join(lock.name for lock in locks)}")
    return [pins[_canonical(name)] for name in names]


def cache_key() -> str:
    recipe = "\n".join([RECIPE, SUITE, *DEBIAN_PACKAGES, *pinned(WHEELS)])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def ensure(cache: Path = CACHE, log: bool = False) -> Arm64Python:
    """The arm64 Python for the current lock file, made now if it does not exist yet.

    Safe to call from parallel test workers: one makes it, the others wait for it.
    """
    target = cache / cache_key()
    python = Arm64Python(target / "root", target / "site")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if (target / "ready").exists():
            return python
        for stale in cache.iterdir():  # made from an older lock file or recipe
            if stale.is_dir():
                shutil.rmtree(stale)
        scratch = Path(tempfile.mkdtemp(prefix="making-", dir=cache))
        try:
            _debootstrap(scratch / "root", log)
            _unpack_wheels(scratch / "site", log)
            (scratch / "ready").write_text(cache_key() + "\n")
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return python


def _debootstrap(root: Path, log: bool) -> None:
    """A minimal arm64 root with Python: debootstrap's first stage, then the rest of its packages unpacked."""
    mirror = os.environ.get("MODELYARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    command = [
        "debootstrap",
        "--foreign",
        "--arch=arm64",
        "--variant=minbase",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        SUITE,
        str(root),
        mirror,
    ]
    _run(command, log)
    # The first stage unpacks only the "required" packages; the interpreter is among the "base" ones
    # its second stage would install (which would need to run arm64 code).
    # tar keeps the root's merged-/usr links (/lib -> usr/lib) where a package still ships /lib files.
    base = (root / "debootstrap" / "base").read_text().split()
    paths = dict(line.split(" ", 1) for line in (root / "debootstrap" / "debpaths").read_text().splitlines())
    debs = [str(root / paths[package].lstrip("/")) for package in base]
    unpack = 'for deb in "$@"; do dpkg-deb --fsys-tarfile "$deb"; done | tar -x -i --keep-directory-symlink -C "$0"'
    _run(["sh", "-c", unpack, str(root), *debs], log=False)
    shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    if not (root / "usr" / "bin" / "python3.11").exists():
        raise RuntimeError(f"{root}: debootstrap made no usr/bin/python3.11")


def _unpack_wheels(site: Path, log: bool) -> None:
    wheels = site.parent / "wheels"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--platform=manylinux2014_aarch64",
        "--python-version=3.11",
        "--implementation=cp",
        f"--dest={wheels}",
        *pinned(WHEELS),
    ]
    _run(command, log)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    shutil.rmtree(wheels)


def _run(command: list[str], log: bool) -> None:
    if log:
        print("+", " ".join(command), file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> None:
    python = ensure(log=True)
    env = " ".join(f"{key}={value}" for key, value in python.env().items())
    print(f"env {env} {' '.join(python.command('qemu-aarch64', 'max'))}")


if __name__ == "__main__":
    main()
