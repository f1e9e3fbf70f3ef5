"""Accepting connections: every one that waits, each time the listening socket is readable.

libuv, under uvloop, accepts one connection per turn of the event loop. A turn under load takes
10-50 ms, so when the 500 connections of a slowloris time out together and come back at once, a new
client queued behind them in the kernel's accept queue for seconds (``./dev bench load``: 1.5-2.6 s,
though the loop itself never stalled). :class:`Listener` accepts all that wait, up to
:data:`ACCEPT_BATCH`, in one turn, as asyncio's own loop does: the price of a flood is one longer turn,
not a queue that drains at one connection per turn.

Example::

    listener = Listener(asyncio.get_running_loop(), bind("127.0.0.1", 0), MyProtocol)
    ...
    listener.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

ACCEPT_BATCH = 2048  # connections taken per readable event: the listen backlog (worker.server.BACKLOG)
PAUSE_SECONDS = 1.0  # out of file descriptors or memory: stop accepting this long, as asyncio does
# The client gave up between its connect and our accept: nothing to do but take the next one.
GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET})
log = logging.getLogger("modelyard.worker")


class Listener:
    """Serves ``protocol_factory`` on the listening socket ``sock``; the interface uvicorn needs of a server."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._pause: asyncio.TimerHandle | None = None
        self._closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept_waiting)

    def _accept_waiting(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in GONE:
                    continue
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: the socket stays readable, so retrying at once would spin.
                log.warning("not accepting connections for %g s: %s", PAUSE_SECONDS, error)
                self._loop.remove_reader(self._sock.fileno())
                self._pause = self._loop.call_later(PAUSE_SECONDS, self._resume)
                return
            self._connect(conn)

    def _connect(self, conn: socket.socket) -> None:
        """``loop.connect_accepted_socket``, started now: its transport is made in this turn.

        As a task it would start only in the next turn, and the connection's first read come one turn
        later than with libuv's own accept (a probe's p50 under load 7 ms higher). The coroutine makes
        the transport, then waits for connection_made; its end is driven from that wait's callback.
        """
        coroutine = self._loop.connect_accepted_socket(self._protocol_factory, conn)
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return
        except OSError:
            conn.close()  # reset before its transport was made: a client that left
            return
        waiting.add_done_callback(lambda _: _finish(coroutine))

    def _resume(self) -> None:
        self._pause = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_waiting)

    def close(self) -> None:
        """Stop accepting; connections already made go on (uvicorn closes them, and the socket)."""
        if self._closed:
            return
        self._closed = True
        if self._pause is not None:
            self._pause.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        """Nothing outlives :meth:`close`: connections are uvicorn's to wait for."""


def _finish(coroutine: Coroutine[Any, Any, object]) -> None:
    with contextlib.suppress(StopIteration, OSError):  # OSError: the transport closed itself already
        coroutine.send(None)
