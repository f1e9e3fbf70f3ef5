"""Running the front-end: uvicorn with uvloop and httptools, on a socket bound here.

The socket is bound before the server starts, so ``port=0`` picks a free port and the line printed
on stderr names the real one (tests and scripts read it). The access log (one JSON line per request)
goes to stdout, everything else to stderr.

Example::

    serve(create_app(open_store("store")), host="127.0.0.1", port=5000)
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from worker.guard import access_log
from worker.protocol import BoundedHttpToolsProtocol

BACKLOG = 2048  # a burst of 64+ connections must not be refused while the loop is busy


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a ':'); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def configure_logging(access: bool = True, level: int = logging.INFO) -> None:
    """Access lines (JSON) on stdout; warnings and errors of the worker and uvicorn on stderr."""
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [access_handler]
    access_log.propagate = False
    access_log.setLevel(logging.INFO if access else logging.WARNING)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(app: ASGIApp, sock: socket.socket, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT or SIGTERM; ``on_ready`` gets the base URL."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed
        http=BoundedHttpToolsProtocol,  # httptools, with a bound on request heads
        log_config=None,
        access_log=False,  # ours is the JSON line of worker.guard
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        on_ready(f"http://{netloc}")
    server.run(sockets=[sock])
