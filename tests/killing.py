"""Stop a real ``modelyard`` process at an exact moment, to kill it or let it go on: what the kill and
race tests share.

The command runs in its own process, with an audit hook (PEP 578) that watches what the process does.
When it is about to rename a file onto a path containing the marker (local store), to send an HTTP
request whose request line contains it (S3), or to open a file for reading whose path contains it,
the hook makes the process stand still (once) and says so; the test then looks at the store and
kills the process with SIGKILL, or lets it go on. Nothing in modelyard knows about it, and the moment
is the same on every run, where a timer would race the build.

Example::

    with paused_at("catalog/org/model.json", ["build", "--models", "m.yaml", "--all"], tmp_path) as process:
        assert store.get_catalog("org/model") is None
    # the process was killed with SIGKILL at that moment
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `modelyard ARGS`, standing still just before the PAUSE_NTH-th rename onto, HTTP request naming,
# or read of MARKER, until the file PAUSE_RESUME appears (or a SIGKILL comes).
HARNESS = """
import os, sys, time
marker, ready, resume = os.environ["PAUSE_MARKER"], os.environ["PAUSE_READY"], os.environ["PAUSE_RESUME"]
left = int(os.environ["PAUSE_NTH"])
paused = False

def stand_still():
    global paused, left
    left -= 1
    if left:
        return
    paused = True
    with open(ready, "w") as note:
        note.write(str(os.getpid()))
    while not os.path.exists(resume):
        time.sleep(0.02)

def hook(event, args):
    if paused:
        return
    if event == "os.rename" and marker in os.fsdecode(args[1]):
        stand_still()
    elif event == "http.client.send" and marker.encode() in bytes(args[1])[:4096].split(b"\\r\\n", 1)[0]:
        stand_still()
    elif event == "open" and isinstance(args[0], str) and marker in args[0] and args[1] in ("r", "rb"):
        stand_still()

sys.addaudithook(hook)
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def modelyard(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``modelyard ARGS`` to its end."""
    command = [sys.executable, "-m", "pipeline", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


@dataclass
class Paused:
    """A ``modelyard`` process started by :func:`start_paused`."""

    process: subprocess.Popen[bytes]
    marker: str
    ready: Path  # appears when the process stands still
    log: Path  # its stdout and stderr

    def wait_until_paused(self, timeout: float = 120) -> bool:
        """True once the process stands still; False if it ended without reaching the marker."""
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                pytest.fail(f"modelyard never reached {self.marker!r}:\n{self.output()}")
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def resume(self) -> None:
        Path(f"{self.ready}.resume").touch()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_paused(
    marker: str, args: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None, nth: int = 1
) -> Paused:
    """Start ``modelyard ARGS``, to stand still when it reaches ``marker`` for the ``nth`` time."""
    ready = workdir / f"paused-{time.monotonic_ns()}"
    log = workdir / f"{ready.name}.log"
    environment = {
        **os.environ,
        **(env or {}),
        "PAUSE_MARKER": marker,
        "PAUSE_READY": str(ready),
        "PAUSE_RESUME": f"{ready}.resume",
        "PAUSE_NTH": str(nth),
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", HARNESS, *args], cwd=ROOT, env=environment, stdout=output, stderr=output
        )
    return Paused(process, marker, ready, log)


@contextmanager
def paused_at(
    marker: str, args: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``modelyard ARGS``, wait until it stands still at ``marker``, yield it, then SIGKILL it."""
    paused = start_paused(marker, args, workdir, env)
    try:
        if not paused.wait_until_paused():
            pytest.fail(f"modelyard {' '.join(args)} ended before {marker!r}:\n{paused.output()}")
        yield paused.process
    finally:
        paused.kill()
    assert paused.process.returncode == -signal.SIGKILL
