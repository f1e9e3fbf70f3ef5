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

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `modelyard ARGS`, standing still just before the PAUSE_NTH-th rename onto, HTTP request naming,
# or read of MARKER, until the file PAUSE_RESUME appears (or a SIGKILL comes). With PAUSE_WRITES=1 it
# counts only writes: renames onto and removals of MARKER, HTTP PUT, POST and DELETE requests naming it.
# With PAUSE_LOG, it writes a line into that file for each event it counts.
PAUSE_HOOK = """
import os, sys, time
marker, ready, resume = os.environ["PAUSE_MARKER"], os.environ["PAUSE_READY"], os.environ["PAUSE_RESUME"]
left = int(os.environ["PAUSE_NTH"])  # 0: never stand still (with PAUSE_LOG, to see what it does)
writes = os.environ["PAUSE_WRITES"] == "1"  # only writes count: renames and removals, PUT, POST and DELETE
log = os.environ.get("PAUSE_LOG")  # each event counted, one line each
paused = False

def reached(what):
    global paused, left
    if log:
        with open(log, "a") as lines:
            lines.write(what + "\\n")
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
        reached("rename " + os.fsdecode(args[1]))
    elif event == "http.client.send":
        line = bytes(args[1])[:4096].split(b"\\r\\n", 1)[0]
        if marker.encode() in line and (not writes or line.split(b" ", 1)[0] in (b"PUT", b"POST", b"DELETE")):
            reached(line.decode(errors="replace"))
    elif writes and event == "os.remove" and marker in os.fsdecode(args[0]) and os.path.lexists(args[0]):
        reached("remove " + os.fsdecode(args[0]))
    elif not writes and event == "open" and isinstance(args[0], str) and marker in args[0] and args[1] in ("r", "rb"):
        reached("read " + args[0])

sys.addaudithook(hook)
"""
HARNESS = PAUSE_HOOK + "from pipeline.cli import main\nsys.exit(main(sys.argv[1:]))\n"

# Imports modelyard once, then for each request on stdin (one JSON line) forks a process that runs
# `modelyard ARGS` (with the pause hook when asked), or reports on one it forked; answers on stdout.
FORKER = """
import json, os, sys, traceback
from pipeline.cli import main
hook = sys.argv[1]

def run(request):
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(request["env"])
        if "PAUSE_MARKER" in request["env"]:
            exec(hook, {"__name__": "pause_hook"})
        code = main(request["args"])
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "start":
        pid = os.fork()
        if pid == 0:
            run(request)
        answer = pid
    else:
        pid, status = os.waitpid(request["pid"], os.WNOHANG if request["op"] == "poll" else 0)
        answer = os.waitstatus_to_exitcode(status) if pid else None
    print(json.dumps(answer), flush=True)
"""


class Process(Protocol):
    """What the tests do with a ``modelyard`` process: a :class:`subprocess.Popen` or a :class:`Forked`."""

    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def modelyard(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``modelyard ARGS`` to its end."""
    command = [sys.executable, "-m", "pipeline", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


@dataclass
class Paused:
    """A ``modelyard`` process started by :func:`start_paused`."""

    process: Process
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
    marker: str,
    args: Sequence[str],
    workdir: Path,
    env: Mapping[str, str] | None = None,
    nth: int = 1,
    *,
    writes: bool = False,
) -> Paused:
    """Start ``modelyard ARGS``, to stand still when it reaches ``marker`` for the ``nth`` time.

    With ``writes``, only its writes naming ``marker`` count (a store's location names all its writes).
    """
    ready, log, pause = _pause_environment(marker, workdir, nth, writes)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", HARNESS, *args],
            cwd=ROOT,
            env={**os.environ, **(env or {}), **pause},
            stdout=output,
            stderr=output,
        )
    return Paused(process, marker, ready, log)


def _pause_environment(
    marker: str, workdir: Path, nth: int, writes: bool, record: Path | None = None
) -> tuple[Path, Path, dict[str, str]]:
    """Where a paused process says it stands still, its log, and the environment that tells the hook when."""
    ready = workdir / f"paused-{time.monotonic_ns()}"
    pause = {
        "PAUSE_MARKER": marker,
        "PAUSE_READY": str(ready),
        "PAUSE_RESUME": f"{ready}.resume",
        "PAUSE_NTH": str(nth),
        "PAUSE_WRITES": "1" if writes else "0",
        **({"PAUSE_LOG": str(record)} if record is not None else {}),
    }
    return ready, workdir / f"{ready.name}.log", pause


@contextmanager
def paused_at(
    marker: str, args: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[Process]:
    """Start ``modelyard ARGS``, wait until it stands still at ``marker``, yield it, then SIGKILL it."""
    paused = start_paused(marker, args, workdir, env)
    try:
        if not paused.wait_until_paused():
            pytest.fail(f"modelyard {' '.join(args)} ended before {marker!r}:\n{paused.output()}")
        yield paused.process
    finally:
        paused.kill()
    assert paused.process.returncode == -signal.SIGKILL


class Forker:
    """Runs many ``modelyard`` processes cheaply: each is forked from one that imported modelyard once.

    A test that kills a build at each of dozens of moments would otherwise pay for Python's start and
    modelyard's imports (about a second of CPU) twice per moment. Each run is still a process of its
    own, killed with a real SIGKILL. ``env`` is set before the imports (huggingface_hub reads
    ``HF_ENDPOINT`` then) and holds for every run.

    Example::

        with Forker(tmp_path, {"HF_ENDPOINT": hub.url}) as forker:
            paused = forker.start_paused(f"{store}/", args, nth=3, writes=True)
            assert paused.wait_until_paused()
            paused.kill()
            code, output = forker.run(args)
    """

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self._process = subprocess.Popen(
            [sys.executable, "-c", FORKER, PAUSE_HOOK],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> Forker:
        return self

    def __exit__(self, *args: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)

    def ask(self, **request: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            pytest.fail(f"the forker ended (exit status {self._process.wait()})")
        return json.loads(answer)

    def start(self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Forked:
        """Fork ``modelyard ARGS``, its stdout and stderr into ``log``."""
        return Forked(self, self.ask(op="start", args=list(args), log=str(log), env=dict(env or {})))

    def start_paused(self, marker: str, args: Sequence[str], nth: int = 1, *, writes: bool = False) -> Paused:
        """As :func:`start_paused`, forked."""
        ready, log, pause = _pause_environment(marker, self.workdir, nth, writes)
        return Paused(self.start(args, log, pause), marker, ready, log)

    def events(self, marker: str, args: Sequence[str], *, writes: bool = False) -> tuple[int, str, list[str]]:
        """Run ``modelyard ARGS`` to its end: its exit status, output, and the events :func:`start_paused`
        would count for ``marker`` (``rename PATH``, ``remove PATH``, an HTTP request line, ``read PATH``)."""
        record = self.workdir / f"events-{time.monotonic_ns()}"
        record.touch()
        _, log, pause = _pause_environment(marker, self.workdir, 0, writes, record)
        code = self.start(args, log, pause).wait()
        return code, log.read_text(errors="replace"), record.read_text().splitlines()

    def run(self, args: Sequence[str]) -> tuple[int, str]:
        """Run ``modelyard ARGS`` to its end: its exit status and output."""
        log = self.workdir / f"run-{time.monotonic_ns()}.log"
        code = self.start(args, log).wait()
        return code, log.read_text(errors="replace")


class Forked:
    """A ``modelyard`` process a :class:`Forker` forked: a :class:`Process`."""

    def __init__(self, forker: Forker, pid: int) -> None:
        self.forker = forker
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.forker.ask(op="poll", pid=self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if timeout is not None:
                deadline = time.monotonic() + timeout
                while self.poll() is None:
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(f"modelyard (pid {self.pid})", timeout)
                    time.sleep(0.02)
                return self.poll()  # type: ignore[return-value]
            self.returncode = self.forker.ask(op="wait", pid=self.pid)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)
