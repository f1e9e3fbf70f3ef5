"""The front-end's container image, for real: deploy/Containerfile built by buildah, run by podman.

Public registries are out of reach here, so the base is a minimal Debian bookworm root with python3 made
by mmdebstrap and imported with ``podman import`` (cached under .tools/container/, like the wheels the
build installs offline). Two replicas then serve one bucket (a moto S3 server) behind one address, a
round-robin TCP proxy, while a build publishes into that bucket: no client sees an error, because the
front-end keeps no state of its own (its caches only delay a moved tag by --cache-seconds).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from pipeline.oci.image import MEDIA_TYPE_INDEX
from pipeline.store import Store
from pipeline.store.s3 import S3Backend
from tests.conftest import ROOT, require_tool, run
from tests.podman import Podman, podman_sandbox
from tests.registry_fixtures import moto_s3, publish, running_registry, small_model_files

CACHE = ROOT / ".tools" / "container"
BASE = "localhost/modelyard-test-base:bookworm"
IMAGE = "localhost/modelyard-serve:test"
# A bookworm root with what the Containerfile needs (python3 and its venv module, CA certificates), merged
# /usr without the usrmerge package (and the perl it pulls in), and no documentation.
MMDEBSTRAP = [
    "--variant=essential",
    "--format=tar",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--include=python3,python3-venv,ca-certificates",
    "--dpkgopt=force-unsafe-io",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "bookworm",
]
MANIFEST_TYPES = f"{MEDIA_TYPE_INDEX}, application/vnd.oci.image.manifest.v1+json"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One writer of a cache entry at a time (two test workers, two runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_tarball() -> Path:
    """The Debian root as a tarball, made once and kept: mmdebstrap takes minutes, an import seconds."""
    mmdebstrap = require_tool("mmdebstrap")
    sources = next(
        (p for p in map(Path, ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")) if p.exists()), None
    )
    key = hashlib.sha256(json.dumps(MMDEBSTRAP).encode()).hexdigest()[:16]
    tarball = CACHE / f"bookworm-python3-{key}.tar"
    with locked(tarball):
        if not tarball.exists():
            partial = tarball.with_suffix(".partial")
            run(mmdebstrap, "--quiet", *MMDEBSTRAP, str(partial), *([str(sources)] if sources else []))
            partial.rename(tarball)
    return tarball


def wheelhouse() -> Path:
    """The wheels of requirements.lock for this machine's Python (the base's: both are Debian's), kept by lock."""
    lock = (ROOT / "requirements.lock").read_text()
    key = hashlib.sha256(lock.encode()).hexdigest()[:16]
    wheels = CACHE / f"wheels-{key}"
    with locked(wheels):
        if not (wheels / ".complete").exists():
            requirements = CACHE / f"requirements-{key}.txt"
            requirements.write_text(
                "".join(line + "\n" for line in lock.splitlines() if line and not line.startswith("#"))
            )
            pip = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps"]
            run(*pip, "--only-binary", ":all:", "-r", str(requirements), "-d", str(wheels))
            (wheels / ".complete").touch()
    return wheels


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[Podman]:
    with podman_sandbox(tmp_path / "storage") as podman:
        yield podman


class RoundRobinProxy:
    """One address for several replicas: each new TCP connection goes to the next one, as a Service does."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.connections = [0] * len(backends)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        turn = 0
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            index = turn % len(self.backends)
            turn += 1
            self.connections[index] += 1
            upstream = socket.create_connection(("127.0.0.1", self.backends[index]))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection (so the proxy picks the next replica)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def pull(port: int, name: str) -> None:
    """What a client does: the tag, the platform manifest, the config, a range of the layer; every digest checked."""

    def fetch(
        path: str, accept: str = MANIFEST_TYPES, expected: int = 200, **headers: str
    ) -> tuple[dict[str, str], bytes]:
        status, response_headers, body = get(port, path, {"Accept": accept, **headers})
        assert status == expected, f"GET {path}: {status} {body[:300]!r}"
        return response_headers, body

    headers, body = fetch(f"/v2/{name}/manifests/latest")
    assert headers["docker-content-digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    platform = json.loads(body)["manifests"][0]["digest"]
    headers, body = fetch(f"/v2/{name}/manifests/{platform}")
    assert headers["docker-content-digest"] == platform == "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    config = manifest["config"]["digest"]
    _, body = fetch(f"/v2/{name}/blobs/{config}", accept="*/*")
    assert "sha256:" + hashlib.sha256(body).hexdigest() == config
    layer = manifest["layers"][0]["digest"]
    _, body = fetch(f"/v2/{name}/blobs/{layer}", accept="*/*", expected=206, Range="bytes=0-99")
    assert len(body) == 100


def wait_healthy(port: int, timeout: float = 60) -> None:
    """Return once /healthz answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if get(port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the container did not become healthy on port {port} within {timeout} s")


@pytest.mark.slow
def test_the_front_end_image_serves_one_bucket_from_two_replicas(containers: Podman, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    clock = time.monotonic()
    tarball, wheels = base_tarball(), wheelhouse()
    timings["base and wheels (cached)"] = time.monotonic() - clock

    clock = time.monotonic()
    containers("import", "--quiet", str(tarball), BASE)
    containers.build(
        "--quiet", "--format", "docker",  # the docker format keeps HEALTHCHECK (OCI configs have no field for it)
        "--build-arg", f"BASE={BASE}", "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
        "--volume", f"{wheels}:/wheels:ro",
        "-f", str(ROOT / "deploy" / "Containerfile"), "-t", IMAGE, str(ROOT),
    )  # fmt: skip
    timings["import and build"] = time.monotonic() - clock

    (inspected,) = json.loads(containers("image", "inspect", IMAGE).stdout)
    config = inspected["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["python", "-m", "pipeline", "serve"]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "python", "-m", "worker.healthcheck"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "MODELYARD_PORT=8080" in config["Env"]
    (base,) = json.loads(containers("image", "inspect", BASE).stdout)
    sizes = {"image": inspected["Size"], "base": base["Size"]}

    with moto_s3() as s3:
        store = Store(S3Backend.from_url("s3://models/prod"))
        publish(store, tmp_path / "first", small_model_files())
        ports = [free_port(), free_port()]
        environment = [f"--env={key}={value}" for key, value in s3.env.items()]
        clock = time.monotonic()
        for index, port in enumerate(ports):
            containers(
                "run", "--detach", "--name", f"replica{index}", "--network", "host",
                # as deploy/kubernetes runs it: a read-only root, no capabilities
                "--read-only", "--cap-drop", "all",
                # podman's default limits raise the process's, which needs CAP_SYS_RESOURCE; lowering never does.
                "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024",
                *environment, "--env", "MODELYARD_STORE=s3://models/prod", "--env", "MODELYARD_HOST=127.0.0.1",
                "--env", f"MODELYARD_PORT={port}", "--env", "MODELYARD_CACHE_SECONDS=1",
                IMAGE,
            )  # fmt: skip
        for port in ports:
            wait_healthy(port)
        timings["podman run to healthy (two replicas)"] = time.monotonic() - clock
        containers("healthcheck", "run", "replica0")  # the image's own HEALTHCHECK, run as podman would
        assert containers("exec", "replica0", "id", "-u").stdout.strip() == "65532"
        assert (
            containers("exec", "replica0", "sh", "-c", "touch /opt/modelyard/x 2>&1 || echo denied")
            .stdout.strip()
            .endswith("denied")
        )

        errors: list[str] = []
        pulls = 0
        published = threading.Event()

        def publish_meanwhile() -> None:
            try:
                for round_ in range(3):  # the tag moves each round; a new repository appears too
                    files = {**small_model_files(), "round.txt": b"%d" % round_}
                    publish(store, tmp_path / f"round{round_}", files)
                    publish(store, tmp_path / f"new{round_}", files, name=f"org/new{round_}")
                    time.sleep(0.2)
            except Exception as err:
                errors.append(f"publish: {err!r}")
            finally:
                published.set()

        with RoundRobinProxy(ports) as proxy:
            publisher = threading.Thread(target=publish_meanwhile)
            publisher.start()
            deadline = time.monotonic() + 120
            while (not published.is_set() or pulls < 20) and time.monotonic() < deadline:
                try:
                    pull(proxy.port, "org/model")
                except (AssertionError, OSError) as err:
                    errors.append(str(err))
                pulls += 1
            publisher.join()
            pull(proxy.port, "org/new2")  # a repository published meanwhile, through either replica
            skopeo = require_tool("skopeo")
            run(skopeo, "copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{proxy.port}/org/model:latest",
                f"oci:{tmp_path / 'copy'}:latest")  # fmt: skip
            connections = list(proxy.connections)

        assert errors == [] and pulls >= 20
        assert min(connections) >= 20  # both replicas served
        for index in range(2):
            logs = containers("logs", f"replica{index}").stdout
            assert '"status": 200' in logs and '"status": 5' not in logs
        clock = time.monotonic()
        containers("stop", "--time", "20", "replica0", "replica1")
        timings["graceful stop (SIGTERM)"] = time.monotonic() - clock
        for index in range(2):
            state = json.loads(containers("inspect", f"replica{index}").stdout)[0]["State"]
            assert state["ExitCode"] == 0, state

    print(f"\ncontainer: image {sizes['image'] / 1e6:.0f} MB (base {sizes['base'] / 1e6:.0f} MB), {pulls} pulls, "
          f"connections per replica {connections}; " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))  # fmt: skip


def test_the_health_check_command(tmp_path: Path) -> None:
    """The image's HEALTHCHECK: 0 while /healthz is 200; 1 with the reason when the store is down or nothing listens."""
    from worker.healthcheck import check, main

    with moto_s3() as s3:
        store = Store(S3Backend.from_url("s3://models/prod"))
        publish(store, tmp_path / "model", small_model_files())
        with running_registry("s3://models/prod", tmp_path / "serve", env=s3.env) as registry:
            assert main([f"{registry.url}/healthz"]) == 0
            s3.server.stop()
            problem = check(f"{registry.url}/healthz")
            assert problem is not None and problem.startswith(f"{registry.url}/healthz: HTTP 503")
    closed = free_port()
    assert (
        check(f"http://127.0.0.1:{closed}/healthz", timeout=1)
        == f"http://127.0.0.1:{closed}/healthz: [Errno 111] Connection refused"
    )
    assert main([f"http://127.0.0.1:{closed}/healthz"]) == 1
