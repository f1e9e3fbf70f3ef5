"""worker.listener on uvloop: a flood of waiting connections is accepted at once, and no descriptors pauses it.

Real sockets on 127.0.0.1 and a real uvloop loop; a loop turn is counted by a callback that reschedules
itself, so "accepted at once" is a count of turns, not a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import Callable, Iterator

import pytest
import uvloop

from worker.listener import PAUSE_SECONDS, Listener
from worker.server import bind

FLOOD = 300  # the reconnects of a slowloris whose connections timed out together, roughly


class Turns:
    """Counts the event loop's turns: one call per turn, rescheduled each time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self._loop = loop
        loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._loop.call_soon(self._tick)


def recorder(made: list[int], turns: Turns) -> type[asyncio.Protocol]:
    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(turns.count)

    return Recorder


@contextlib.contextmanager
def clients(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections the kernel has completed and queued for accept."""
    opened = [socket.create_connection(address, timeout=10) for _ in range(count)]
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_flood_of_waiting_connections_is_accepted_within_a_turn_or_two() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        made: list[int] = []
        turns = Turns(loop)
        with bind("127.0.0.1", 0) as sock, clients(sock.getsockname(), FLOOD):
            listener = Listener(loop, sock, recorder(made, turns))
            await wait_for(lambda: len(made) == FLOOD, 10)
            listener.close()
        return made

    made = uvloop.run(scenario())
    # uvloop's own server (libuv) takes one connection per turn: these would span about FLOOD turns.
    assert len(made) == FLOOD
    assert max(made) - min(made) <= 2, f"accepted over {max(made) - min(made)} turns"


def test_out_of_descriptors_accepting_pauses_then_resumes(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        made: list[int] = []
        turns = Turns(loop)
        with bind("127.0.0.1", 0) as sock, clients(sock.getsockname(), 5):
            listener = Listener(loop, sock, recorder(made, turns))
            with descriptors_exhausted():
                await asyncio.sleep(PAUSE_SECONDS / 2)
                made_while_out = len(made)
            pauses = sum("not accepting connections" in record.message for record in caplog.records)
            await wait_for(lambda: len(made) == 5, PAUSE_SECONDS * 3)
            listener.close()
        return made_while_out, pauses, len(made)

    with caplog.at_level(logging.WARNING, logger="modelyard.worker"):
        made_while_out, pauses, made = uvloop.run(scenario())
    assert made_while_out == 0
    assert pauses == 1  # it stopped watching the socket: no retry on every turn while out
    assert made == 5


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Every file descriptor this process may open is taken, until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))  # the holes below the limit
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
