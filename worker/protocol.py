"""uvicorn's httptools protocol, hardened: bounded request heads, timeouts, a connection cap, JSON refusals.

httptools (the fast parser) and uvicorn leave a connection open as long as its client likes and take
request heads of any size. Here, per connection:

- **each request head** is bounded (:data:`MAX_HEAD_BYTES`, 431 past it), counted per head however
  many pipelined requests one read holds, since the bytes are parsed in pieces of :data:`PIECE`;
- **pipelining** is bounded: once :data:`MAX_PIPELINED` requests wait parsed behind the one being
  answered, the bytes after them wait unparsed, with reading paused, so one write of 1,500 requests
  costs the memory of a few dozen;
- **a request head must be complete** within ``head_timeout`` seconds of its first byte (of the
  connection's opening, for the first request): else 408 and close (a silent close when nothing came);
- **an idle connection** (keep-alive, between requests) closes after ``idle_timeout`` seconds;
- **at most ``max_connections``** are open: a new one past the cap closes the connection that has
  waited longest without a request being answered on it (idle, or still sending a head: what a
  slowloris holds), so a client that sends a request at once is served. Only when every connection is
  busy answering does the newcomer get 503 with Retry-After, and a close: a clean answer a client
  retries, where an unexplained reset would look like a network fault.

Broken requests get 400, as the registry's JSON error. Everything else is uvicorn's own protocol.

Example::

    uvicorn.Config(app, http=bounded_protocol(ConnectionLimits(max_connections=1024)))
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from worker.errors import error_body

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; real clients send a few hundred bytes
PIECE = 4096  # bytes parsed at a time: a head is measured to within this
MAX_PIPELINED = 16  # parsed requests waiting behind the one being answered
RETRY_AFTER_SECONDS = 1  # a refused connection may try again this soon: connections free up fast
HEAD_TIMEOUT_SPREAD = 0.2  # head timeouts fall anywhere in the last fifth of head_timeout


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout: float = 10.0  # seconds to send a whole request head
    idle_timeout: float = 30.0  # seconds a keep-alive connection may wait for its next request
    max_connections: int = 1024


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for one server: its limits, and the register of its waiting connections."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits, "waiting": OrderedDict()})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # The server's connections that no request is being answered on, longest waiting first: who goes at the cap.
    waiting: ClassVar[OrderedDict[BoundedHttpToolsProtocol, None]] = OrderedDict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[memoryview] = []  # received, not yet parsed (reading is paused meanwhile)
        self._in_head = True  # between requests or inside a head, rather than inside a body
        self._head_bytes = 0  # bytes parsed since the head began (to within PIECE)
        self._head_began = False  # a head began in the piece being parsed
        self._partial = False  # bytes of a next request came: the head clock runs
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_cap = False  # no connection could make room for this one: its request gets 503
        self._refused = False

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_waiting()
        self._arm_head_timer()  # the first request must come, and whole, within head_timeout
        if len(self.connections) > self.limits.max_connections:
            victim = next((c for c in self.waiting if c is not self), None)
            if victim is not None:
                victim._let_go()
            else:
                self._over_cap = True

    def _let_go(self) -> None:
        """Close this idle or half-sent connection to make room (RFC 9112 §9.6).

        It stops counting at once: a flood accepted in one turn of the loop makes room one victim per
        newcomer, before any of their connection_lost calls has come.
        """
        self.waiting.pop(self, None)
        self.connections.discard(self)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _busy(self) -> bool:
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def _start_waiting(self) -> None:
        self.waiting.pop(self, None)
        self.waiting[self] = None  # the newest waiter goes last

    # parsing

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._busy():
            self._partial = True  # any byte, even a stray CRLF, starts the clock of the next head
        self._pending.append(memoryview(data))
        self._parse()

    def _parse(self) -> None:
        """Feed the parser what is pending, piece by piece, while fewer than MAX_PIPELINED requests wait."""
        if self._pending:
            self._unset_keepalive_if_required()
        while self._pending and not self._refused and len(self.pipeline) < MAX_PIPELINED:
            piece = self._pending[0][:PIECE]
            self._pending[0] = self._pending[0][len(piece) :]
            if not self._pending[0]:
                self._pending.pop(0)
            self._head_began = False
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()  # no WebSockets here: the request was answered as HTTP
            except httptools.HttpParserError:
                if not self._refused:  # (else a callback refused the request and stopped the parse)
                    self.logger.warning("malformed HTTP request refused")
                    self._send_error(400, "BAD_REQUEST", "malformed HTTP request")
                return
            if self._in_head:
                self._head_bytes = len(piece) if self._head_began else self._head_bytes + len(piece)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self.logger.warning("request head over %d bytes refused", MAX_HEAD_BYTES)
                    self._send_error(
                        431, "REQUEST_HEADER_FIELDS_TOO_LARGE", f"request head over {MAX_HEAD_BYTES} bytes"
                    )
                    return
        if self._pending:
            self.flow.pause_reading()  # resumed when the pipeline drains
        if self._partial and not self._busy():
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        self._head_began = True
        self._partial = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._partial = False, False  # a body may follow (a refused upload): its size is no head's
        self._cancel_head_timer()
        self.waiting.pop(self, None)
        if self._over_cap:
            self._send_error(503, "UNAVAILABLE", "too many connections; try again shortly", RETRY_AFTER_SECONDS)
            raise _Stop  # abandons the parse: the connection is closing
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, or the idle timer
        if self.transport.is_closing():
            return
        if not self._busy():
            self._start_waiting()
        self._parse()  # requests held back behind the pipeline bound

    # timers

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._unset_keepalive_if_required()  # a head in progress has head_timeout, not idle_timeout
            # Between 80% and all of head_timeout: a flood of connections opened at once then times out
            # over seconds, not in one burst of work that would hold up everyone else's requests.
            timeout = self.limits.head_timeout * random.uniform(1 - HEAD_TIMEOUT_SPREAD, 1)
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._busy() or self.transport.is_closing():
            return
        if self._partial:
            self._send_error(408, "REQUEST_TIMEOUT", f"request head not complete within {self.limits.head_timeout:g} s")
        else:
            self.transport.close()  # a connection that never said a word: nothing to answer

    # refusals

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, "BAD_REQUEST", "malformed HTTP request")

    def _send_error(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        if self._refused:
            return
        self._refused = True
        self._pending.clear()
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
        if retry_after is not None:
            head.append(b"retry-after: %d\r\n" % retry_after)
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a connection that is being closed."""
