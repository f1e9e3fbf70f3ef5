"""`modelyard serve` against hostile connections: pipelined bursts, bodies, silence, slowloris, floods.

Each test talks raw TCP to a real server process, so what is measured is what uvicorn, httptools and
worker.protocol do together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.store import Store, open_store
from tests.registry_fixtures import NAME, RunningRegistry, publish, running_registry, small_model_files
from tests.test_registry_clients import read_response

MiB = 1024 * 1024
# Short limits, so the timeouts show within a test; the defaults are 10 s (head) and 30 s (idle).
FAST = ("--head-timeout", "1", "--idle-timeout", "1.5")


@dataclass
class Served:
    registry: RunningRegistry
    store: Store
    address: tuple[str, int]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("connections")
    store = open_store(str(root / "store"))
    publish(store, root / "model", small_model_files())
    return root / "store"


@pytest.fixture
def served(store_root: Path, tmp_path: Path) -> Iterator[Served]:
    with running_registry(str(store_root), tmp_path, *FAST) as registry:
        yield Served(registry, open_store(str(store_root)), address(registry))


def address(registry: RunningRegistry) -> tuple[str, int]:
    host, port = registry.host.split(":")
    return host, int(port)


def connect(served: Served) -> socket.socket:
    return socket.create_connection(served.address, timeout=30)


def read_until_closed(connection: socket.socket) -> bytes:
    received = bytearray()
    while chunk := connection.recv(1 << 20):
        received += chunk
    return bytes(received)


def statuses(responses: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", responses)]


def raise_descriptor_limit() -> None:
    """Let this process hold a few hundred sockets (CI's soft limit may be 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# Item 6: a pipelined burst is bounded per request head, not per read buffer.


def test_1500_pipelined_gets_in_one_write_are_all_answered(served: Served) -> None:
    request = f"GET /v2/{NAME}/tags/list HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    burst = request * 1499 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    assert len(burst) > 64 * 1024  # past the bound on one request head
    with connect(served) as connection:
        connection.sendall(burst)
        answers = read_until_closed(connection)
    assert statuses(answers) == [200] * 1500
    assert answers.count(b'"tags":["') == 1500


@pytest.mark.parametrize(
    ("method", "framing", "size"),
    [("GET", "chunked", 20 * MiB), ("POST", "length", 50 * MiB)],
)
def test_a_large_body_in_one_write_gets_405(served: Served, method: str, framing: str, size: int) -> None:
    path = f"/v2/{NAME}/blobs/uploads/"
    if framing == "chunked":
        piece = os.urandom(MiB)
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        message = head + chunk * (size // MiB) + b"0\r\n\r\n"
    else:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        message = head + os.urandom(MiB) * (size // MiB)
    with connect(served) as connection:
        sender = threading.Thread(target=lambda: _send_quietly(connection, message), daemon=True)
        sender.start()
        answer, _ = read_response(connection)
        sender.join(30)
    assert answer.startswith(b"HTTP/1.1 405 "), answer[:200]
    assert b'"code":"UNSUPPORTED"' in answer


def _send_quietly(connection: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may close once it has answered
        connection.sendall(data)


# Item 5: timeouts and the connection cap.


def test_a_half_sent_head_gets_408_within_the_head_timeout(served: Served) -> None:
    with connect(served) as half, connect(served) as silent, connect(served) as trickling:
        half.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        for byte in b"GET /v2/ HTTP/1.1\r\nX-Slow: " + b"a" * 100:  # a slowloris: one byte every 0.2 s
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
            if time.monotonic() - started > 5:
                break
            time.sleep(0.2)
        assert read_until_closed(half).startswith(b"HTTP/1.1 408 ")
        assert read_until_closed(trickling).startswith(b"HTTP/1.1 408 ")  # its trickle bought it no time
        assert read_until_closed(silent) == b""  # never said a word: closed without an answer


def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    with connect(served) as connection:
        connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(connection)  # the server closes it once idle_timeout has passed
    assert statuses(answer) == [200]


def idle_and_half_sent(served: Served, count: int) -> list[socket.socket]:
    """``count`` attacker connections: half idle, half stuck in the middle of a head."""
    attackers = []
    for index in range(count):
        attacker = socket.create_connection(served.address, timeout=30)
        if index % 2:
            attacker.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Wait: ")
        attackers.append(attacker)
    return attackers


def closed_by_server(attacker: socket.socket) -> bool:
    attacker.setblocking(False)
    try:
        attacker.recv(65536)  # an answer (408) or the end of the stream: either way it was let go
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize("cap", [1024, 100])
def test_a_normal_client_is_served_during_a_flood_of_idle_connections(
    store_root: Path, tmp_path: Path, cap: int
) -> None:
    raise_descriptor_limit()
    # No timeouts to the rescue here (60 s): only the cap protects the normal client.
    options = ("--head-timeout", "60", "--idle-timeout", "60", "--max-connections", str(cap))
    with running_registry(str(store_root), tmp_path, *options) as registry:
        served = Served(registry, open_store(str(store_root)), address(registry))
        attackers = idle_and_half_sent(served, 300)
        try:
            time.sleep(0.5)  # let the server take them all in
            for _ in range(5):
                response = httpx.get(f"{registry.url}/v2/{NAME}/manifests/latest", timeout=10)
                assert response.status_code == 200
            let_go = sum(closed_by_server(attacker) for attacker in attackers)
        finally:
            for attacker in attackers:
                attacker.close()
    if cap < 300:
        assert let_go >= 300 - cap  # the cap closed the longest-waiting ones to make room
    else:
        assert let_go == 0  # under the cap, nothing needed to go


def test_when_every_connection_is_busy_a_newcomer_gets_503(store_root: Path, tmp_path: Path) -> None:
    store = open_store(str(store_root))
    with store.blob_writer() as writer:
        writer.write(os.urandom(64 * MiB))  # an answer far larger than socket buffers: it stays in flight
        digest = writer.commit()
    with running_registry(str(store_root), tmp_path, "--max-connections", "4") as registry:
        host, port = address(registry)
        busy = []
        for _ in range(4):
            connection = socket.create_connection((host, port), timeout=30)
            connection.sendall(f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert connection.recv(12) == b"HTTP/1.1 200"  # answering, and never read further
            busy.append(connection)
        try:
            with socket.create_connection((host, port), timeout=30) as newcomer:
                newcomer.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_until_closed(newcomer)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert b"retry-after: 1\r\n" in answer.lower() and b'"code":"UNAVAILABLE"' in answer
        finally:
            for connection in busy:
                connection.close()
        time.sleep(0.3)  # the busy ones are gone: room again
        response = httpx.get(f"{registry.url}/v2/{NAME}/blobs/{digest}", timeout=30)
        assert response.status_code == 200 and "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
