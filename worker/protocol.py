"""uvicorn's httptools protocol with a bound on the request head and JSON answers to broken requests.

httptools (the fast parser) takes request heads of any size: a client could send endless headers
and the server would keep them all in memory. Here a head larger than :data:`MAX_HEAD_BYTES` gets
431, and a request that is not HTTP gets 400, both as the registry's JSON error, then the
connection closes. Everything else is uvicorn's own protocol.

Example::

    uvicorn.Config(app, http=BoundedHttpToolsProtocol)
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from worker.errors import error_body

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; real clients send a few hundred bytes


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests or inside a head, rather than inside a body
        self._head_bytes = 0  # bytes received since the head began
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.logger.warning("request head over %d bytes refused", MAX_HEAD_BYTES)
                self._send_error(431, "REQUEST_HEADER_FIELDS_TOO_LARGE", f"request head over {MAX_HEAD_BYTES} bytes")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False  # a body may follow (a refused upload): its size is no head's
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, "BAD_REQUEST", "malformed HTTP request")

    def _send_error(self, status: int, code: str, message: str) -> None:
        self._refused = True
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
