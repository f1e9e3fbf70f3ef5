"""The outermost layer of the app: read-only guard, error answers, counters and one JSON log line per request.

Every request passes here, so this is where the promises that hold for all of them are kept:

- a method other than GET or HEAD, or a request with a body (an upload by another name), gets 405
  UNSUPPORTED, and a path hiding '/' as %2F gets 400;
- a :class:`RegistryError` becomes the spec's JSON error; a store that fails (``StoreError``,
  ``OSError``) becomes 503 with ``Retry-After``; a bug becomes a JSON 500 and a logged traceback;
- every request is counted, and logged as one JSON line when an :class:`AccessLog` is given.

Example::

    app = Guard(Router(routes=...), Metrics(), AccessLog(sys.stdout))
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.errors import StoreError
from worker.accesslog import AccessLog, clip
from worker.errors import RegistryError
from worker.metrics import Metrics
from worker.paths import has_encoded_slash

log = logging.getLogger("modelyard.worker")

READ_METHODS = frozenset({"GET", "HEAD"})
API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class Guard:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._serve(scope, receive, send_counting)
        except ClientDisconnect:
            pass  # the client went away mid-answer: nothing to tell it
        except BaseException as error:
            if status == 0 and isinstance(error, Exception):
                await _send_error(scope, send_counting, _error_answer(error))
            else:
                log.warning("answer to %s %s broken off: %r", scope["method"], clip(scope["path"]), error)
                if not isinstance(error, Exception):
                    raise
        finally:
            self.metrics.count_response(scope["method"], status, sent)
            if self.access_log is not None:
                client = scope.get("client")
                seconds = time.perf_counter() - started
                self.access_log.record(
                    client[0] if client else None, scope["method"], scope["path"], status, sent, seconds
                )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in READ_METHODS:
            raise RegistryError.unsupported(scope["method"])
        if _has_body(scope):
            raise RegistryError.unsupported(scope["method"], "this registry is read-only: requests carry no body")
        if has_encoded_slash(scope.get("raw_path") or b""):
            raise RegistryError.bad_path("encoded '/' or '\\' in the path")
        await self.app(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def _error_answer(error: Exception) -> RegistryError:
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, StoreError | OSError):
        log.warning("store unavailable: %s", error)
        return RegistryError.unavailable()
    log.exception("unexpected error", exc_info=error)
    return RegistryError(500, "UNKNOWN", "internal error; it has been logged")


async def _send_error(scope: Scope, send: Send, error: RegistryError) -> None:
    body = b"" if scope["method"] == "HEAD" else error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(error.body())).encode()),
        *((key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in error.headers.items()),
    ]
    if scope["path"].startswith("/v2"):
        headers.append(API_VERSION_HEADER)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
