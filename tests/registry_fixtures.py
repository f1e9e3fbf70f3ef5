"""What the registry tests share: published images, a real `modelyard serve` process, and S3 (moto).

Every server binds 127.0.0.1 on a free port and is stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci.estargz import LayerResult
from pipeline.oci.image import Image, ImageMetadata, build_image
from pipeline.store import Store
from tests.conftest import write_tree

NAME = "org/model"
METADATA = ImageMetadata(title="Org/Model", source="https://huggingface.co/Org/Model", revision="b" * 40)
# Credentials moto accepts; the tests check that neither ever shows in a response or a log line.
S3_KEY_ID = "AKIAMODELYARDTESTKEY"
S3_SECRET = "modelyard-test-secret-never-shown"

# The `modelyard serve` subcommand, through worker.cli.register as pipeline/cli.py wires it.
SERVE = """
import argparse, sys
from worker.cli import register
parser = argparse.ArgumentParser(prog="modelyard")
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.run(args))
"""


def small_model_files() -> dict[str, bytes]:
    """A model tree with nested directories and a file big enough to span gzip members."""
    return {
        "config.json": b'{"hidden_size": 384, "model_type": "bert"}\n',
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
        "tokenizer/vocab.txt": b"".join(b"token%d\n" % i for i in range(5000)),
        "model.safetensors": os.urandom(300_000),
    }


def publish(store: Store, root: Path, files: Mapping[str, bytes], name: str = NAME) -> BuiltImage:
    """Write ``files`` under ``root`` and publish them to ``store`` as ``name:latest`` (and the revision tag)."""
    write_tree(root, files)
    return build_and_publish(store, files_from_dir(root), name=name, tags=["latest", "b" * 40], metadata=METADATA)


def publish_blob(store: Store, blob: Path, layer: LayerResult, name: str) -> Image:
    """Publish a layer blob written elsewhere (the reference writer's) as the image ``name:latest``."""
    with store.blob_writer() as writer, open(blob, "rb") as source:
        shutil.copyfileobj(source, writer)  # type: ignore[misc]
        writer.commit(expected=layer.digest)
    image = build_image(layer, METADATA)
    for item in image.blobs_in_publish_order():
        store.put_blob(item.data)
    store.put_tag(name, "latest", image.index.descriptor)
    return image


@dataclass
class RunningRegistry:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    stdout: Path  # the access log
    stderr: Path

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as image references spell it."""
        return self.url.removeprefix("http://")

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        """The access log's lines so far, parsed; a last line still being written is left for later."""
        text = self.stdout.read_text()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@contextmanager
def running_registry(
    store_location: str, workdir: Path, *options: str, env: Mapping[str, str] | None = None
) -> Iterator[RunningRegistry]:
    """Start ``modelyard serve --store LOCATION --port 0 OPTIONS...``; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = workdir / "serve.stdout", workdir / "serve.stderr"
    command = [sys.executable, "-c", SERVE, "serve", "--store", store_location, "--port", "0", *options]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, **(env or {})})
    try:
        url = _wait_for_url(process, stderr)
        yield RunningRegistry(url, process, stdout, stderr)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], stderr: Path, timeout: float = 20) -> str:
    """The URL from the 'serving STORE on URL' line the server prints once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stderr.read_text(errors="replace").splitlines():
            if line.startswith("serving ") and " on http://" in line:
                return line.split(" on ", 1)[1].split()[0]
        if process.poll() is not None:
            pytest.fail(f"modelyard serve exited {process.returncode}:\n{stderr.read_text(errors='replace')}")
        time.sleep(0.05)
    pytest.fail(f"modelyard serve did not start within {timeout} s:\n{stderr.read_text(errors='replace')}")


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]  # what a process needs to reach it (endpoint and dummy credentials)
    server: ThreadedMotoServer


@contextmanager
def moto_s3(bucket: str = "models") -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 with one bucket; this process's boto3 points at it meanwhile."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            import boto3

            boto3.session.Session().client("s3").create_bucket(Bucket=bucket)
            yield S3(env["AWS_ENDPOINT_URL"], env, server)
    finally:
        server.stop()
