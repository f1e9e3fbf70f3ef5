"""Kill a real ``modelyard`` process at an exact moment: what the kill tests share.

The command runs in its own process, with an audit hook (PEP 578) that watches what the process does.
When it is about to rename a file onto a path containing the marker (local store), or to send an
HTTP request whose head contains it (S3), the hook makes the process stand still and says so; the
test then looks at the store and kills the process with SIGKILL. Nothing in modelyard knows about
it, and the moment is the same on every run, where a timer would race the build.

Example::

    with paused_at("catalog/org/model.json", ["build", "--models", "m.yaml"], tmp_path) as process:
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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `modelyard ARGS`, standing still just before the first rename onto, or HTTP request naming, MARKER.
HARNESS = """
import os, sys, time
marker, ready = os.environ["PAUSE_MARKER"], os.environ["PAUSE_READY"]

def stand_still():
    with open(ready, "w") as note:
        note.write(str(os.getpid()))
    while True:
        time.sleep(60)  # until the test's SIGKILL

def hook(event, args):
    if event == "os.rename" and marker in os.fsdecode(args[1]):
        stand_still()
    elif event == "http.client.send" and marker.encode() in bytes(args[1])[:4096].split(b"\\r\\n", 1)[0]:
        stand_still()

sys.addaudithook(hook)
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def modelyard(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``modelyard ARGS`` to its end."""
    command = [sys.executable, "-m", "pipeline", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


@contextmanager
def paused_at(
    marker: str, args: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``modelyard ARGS``, wait until it stands still at ``marker``, yield it, then SIGKILL it."""
    ready = workdir / f"paused-{time.monotonic_ns()}"
    log = workdir / f"{ready.name}.log"
    environment = {**os.environ, **(env or {}), "PAUSE_MARKER": marker, "PAUSE_READY": str(ready)}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", HARNESS, *args], cwd=ROOT, env=environment, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"modelyard {' '.join(args)} never reached {marker!r}:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
