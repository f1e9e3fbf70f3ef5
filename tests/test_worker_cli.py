"""`modelyard serve`: its options, its help, and what it builds from them."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import boto3
import pytest

from pipeline.errors import MissingStoreError, ModelyardError
from pipeline.store import LocalBackend
from pipeline.store.s3 import S3Backend
from tests.registry_fixtures import moto_s3
from worker.cli import open_serving_store, register


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelyard")
    register(root.add_subparsers(dest="command", required=True))
    return root


def test_defaults_and_options() -> None:
    args = parser().parse_args(["serve"])
    assert (args.store, args.host, args.port, args.cache_seconds, args.presign_seconds) == (
        "store",
        "127.0.0.1",
        5000,
        5.0,
        0,
    )
    args = parser().parse_args(
        ["serve", "--store", "s3://b/p", "--port", "0", "--public-blob-url", "https://cdn.example"]
    )
    assert (args.store, args.port, args.public_blob_url) == ("s3://b/p", 0, "https://cdn.example")


def test_redirect_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["serve", "--public-blob-url", "https://x", "--presign-seconds", "60"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_teaches_by_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "modelyard serve --store s3://models/prod" in text
    assert "COPY --from=127.0.0.1:5000/org/model /config.json ." in text


def test_the_served_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(open_serving_store(str(tmp_path)).backend, LocalBackend)
    with pytest.raises(MissingStoreError, match="no store at"):
        open_serving_store(str(tmp_path / "missing"))
    with moto_s3() as s3:
        boto3.session.Session().client("s3").put_object(Bucket="models", Key="prod/catalog/a.json", Body=b"{}")
        backend = open_serving_store("s3://models/prod").backend
        assert isinstance(backend, S3Backend) and (backend.bucket, backend.prefix) == ("models", "prod")
        assert backend.client.meta.config.connect_timeout == 3  # a store that is down answers 503 quickly
        with pytest.raises(MissingStoreError, match="no store at s3://models/prdo: nothing is stored"):
            open_serving_store("s3://models/prdo")
        with pytest.raises(MissingStoreError, match=f"no bucket 'nope' at {s3.endpoint}"):
            open_serving_store("s3://nope/prod")
    with socket.socket() as closed, pytest.MonkeyPatch.context() as patch:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        for key, value in {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed.getsockname()[1]}"}.items():
            patch.setenv(key, value)
        assert isinstance(open_serving_store("s3://models/prod").backend, S3Backend)  # down for now: served, 503s
    assert "serving anyway (503 until the store answers)" in capsys.readouterr().err


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser().parse_args(["serve", "--store", str(tmp_path), "--port", str(port)])
        with pytest.raises(ModelyardError, match=f"cannot listen on 127.0.0.1:{port}"):
            args.run(args)
