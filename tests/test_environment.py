"""MODELYARD_<OPTION> variables configure `modelyard serve` as flags do (how containers are configured)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.cli.console import duration
from pipeline.cli.environment import apply_environment, check_environment
from pipeline.errors import ModelyardError
from pipeline.store import LocalBackend, Store
from tests.conftest import ROOT
from tests.registry_fixtures import publish, small_model_files


def parse(environ: dict[str, str], *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5000, help="port")
    parser.add_argument("--grace", type=duration, default=60.0)
    parser.add_argument("--mode", choices=("a", "b"), default="a")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--store", default="store")
    apply_environment(parser, environ)
    args = parser.parse_args(argv)
    check_environment(args)
    return args


def test_variables_set_defaults_and_flags_win() -> None:
    args = parse(
        {"MODELYARD_PORT": "8080", "MODELYARD_GRACE": "2h", "MODELYARD_QUIET": "yes", "MODELYARD_STORE": "s3://b/p"}
    )
    assert (args.port, args.grace, args.quiet, args.store) == (8080, 7200.0, True, "s3://b/p")
    assert parse({"MODELYARD_PORT": "8080", "MODELYARD_QUIET": "0"}, "--port", "9000").port == 9000
    assert parse({"MODELYARD_QUIET": "0"}).quiet is False
    assert parse({}).port == 5000


def test_bad_values_name_their_variable() -> None:
    with pytest.raises(ModelyardError) as raised:
        parse({"MODELYARD_PORT": "eighty", "MODELYARD_MODE": "c", "MODELYARD_QUIET": "maybe", "MODELYARD_GRACE": "1y"})
    assert str(raised.value) == (
        "MODELYARD_PORT='eighty' is not a valid --port: invalid literal for int() with base 10: 'eighty'; "
        "MODELYARD_GRACE='1y' is not a valid --grace: '1y' is not a duration like 90s, 30m, 24h or 7d; "
        "MODELYARD_MODE='c' is not a valid --mode: expected one of a, b; "
        "MODELYARD_QUIET='maybe': expected one of 1, true, yes, on or 0, false, no, off"
    )


def test_help_names_the_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in (
        "MODELYARD_STORE",
        "MODELYARD_HOST",
        "MODELYARD_PORT",
        "MODELYARD_CACHE_SECONDS",
        "MODELYARD_NO_ACCESS_LOG",
    ):
        assert f"[env {name}]" in text


def test_serve_configured_by_its_environment_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(Store(LocalBackend(store)), tmp_path / "model", small_model_files())
    env = {**os.environ, "MODELYARD_STORE": str(store), "MODELYARD_PORT": "0", "MODELYARD_NO_ACCESS_LOG": "1"}
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve"], env=env, cwd=ROOT, stderr=err, stdout=subprocess.PIPE
        )
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline and process.poll() is None:
            line = next((li for li in stderr.read_text().splitlines() if li.startswith("serving ")), "")
            url = line.split(" on ", 1)[1].split()[0] if line else ""
            time.sleep(0.05)
        assert url, stderr.read_text()
        assert line.startswith(f"serving {store} on http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/v2/org/model/tags/list") as response:
            assert b'"latest"' in response.read()
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=10)
    assert stdout == b""  # MODELYARD_NO_ACCESS_LOG=1: no access log lines


def test_serve_refuses_a_bad_variable(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(tmp_path / "store")],
        env={**os.environ, "MODELYARD_PORT": "http"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "error: MODELYARD_PORT='http' is not a valid --port: invalid literal for int() with base 10: 'http'"
    )
    both = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(tmp_path / "store"), "--presign-seconds", "60"],
        env={**os.environ, "MODELYARD_PUBLIC_BLOB_URL": "https://cdn.example.com"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert both.returncode == 1 and "--public-blob-url and --presign-seconds exclude each other" in both.stderr
