"""Debian's docker-registry (CNCF distribution 2.8), started on 127.0.0.1 with filesystem storage.

Its packaged default config listens on every address with auth, so this writes its own. Its logging is
off but for errors (the registry benchmark keeps modelyard's access log on, so ratios lean its way).
Used by the tests (find the binary with ``require_tool``) and by ``bench/registry.py``.

Example::

    with cncf_registry(require_tool("docker-registry"), tmp_path) as registry:
        run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{registry.host}/org/model:latest")
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CncfRegistry:
    host: str  # 127.0.0.1:PORT
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def cncf_registry(binary: str, workdir: Path) -> Iterator[CncfRegistry]:
    workdir.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n"
    )
    log = workdir / "registry.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield CncfRegistry(host, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
