"""`./dev demo`: the commands it tells users to try work as printed, and a missing tool is explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import demo
from tests.conftest import ROOT, require_tool, run
from tests.fixture_hub import MINILM_ID, minilm_directory


@pytest.mark.slow
def test_the_demo_serves_what_it_tells_users_to_try(tmp_path: Path) -> None:
    require_tool("skopeo")
    buildah = require_tool("buildah")
    command = [sys.executable, "-m", "tests.demo", "--store", str(tmp_path / "store"), "--port", "0"]
    stderr = (tmp_path / "stderr").open("w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        printed: list[str] = []
        while not printed or not printed[-1].startswith("  buildah"):
            line = process.stdout.readline()
            assert line, f"the demo ended early:\n{(tmp_path / 'stderr').read_text()}"
            printed.append(line.rstrip("\n"))
        tried = [line.strip() for line in printed if line.startswith("  ")]
        host = tried[0].split("docker://", 1)[1].split("/", 1)[0]
        assert tried == demo.try_commands(f"{host}/{MINILM_ID.lower()}")
        _wait_for(f"http://{host}/v2/")

        inspected = json.loads(run("bash", "-c", tried[0]).stdout)
        assert inspected["Name"] == f"{host}/{MINILM_ID.lower()}"
        # The user's two lines, in one shell; only the storage of buildah moves under tmp_path (shared machine).
        rootfs = tmp_path / "rootfs"
        isolated = f"{buildah} --root {tmp_path / 'root'} --runroot {tmp_path / 'runroot'} build"
        build = tried[2].replace("buildah build", f"{isolated} --output type=local,dest={rootfs}", 1)
        run("bash", "-c", f"{tried[1]}\n{build}", env={**os.environ, "TMPDIR": str(tmp_path)})
        assert (rootfs / "config.json").read_bytes() == (minilm_directory() / "config.json").read_bytes()
        assert not (ROOT / "Dockerfile").exists()  # the example's Dockerfile went to a temporary directory
    finally:
        process.terminate()
        process.wait(timeout=30)
        stderr.close()


def _wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_missing_tool_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither skopeo nor buildah
    assert demo.missing_tools() == (
        "demo: skopeo and buildah are not installed. To try the commands above, install them: "
        "sudo apt-get install -y skopeo buildah (Debian, Ubuntu; ./dev setup does it too); on other systems see "
        "https://github.com/containers/skopeo/blob/main/install.md, "
        "https://github.com/containers/buildah/blob/main/install.md"
    )
    (tmp_path / "skopeo").write_text("#!/bin/sh\n")
    (tmp_path / "skopeo").chmod(0o755)
    assert demo.missing_tools() == (
        "demo: buildah is not installed. To try the commands above, install it: sudo apt-get install -y buildah "
        "(Debian, Ubuntu; ./dev setup does it too); on other systems see "
        "https://github.com/containers/buildah/blob/main/install.md"
    )
    (tmp_path / "buildah").write_text("#!/bin/sh\n")
    (tmp_path / "buildah").chmod(0o755)
    assert demo.missing_tools() is None
