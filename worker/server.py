"""Running the front-end: uvicorn with uvloop and httptools, on a socket bound here.

The socket is bound before the server starts, so ``port=0`` picks a free port and ``on_ready``
gets the real one (tests and scripts read it from the line the CLI prints). Messages go
to stderr; the access log is the app's (worker.accesslog), on stdout. Connections are held to
:class:`~worker.protocol.ConnectionLimits`; the cap is lowered to what the process's file
descriptors allow (raised to their hard limit first), so it, not EMFILE, is what refuses. New
connections come through :class:`~worker.listener.Listener`, which takes every waiting one each turn.

Example::

    serve(create_app(open_store("store")), bind("127.0.0.1", 5000))
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import resource
import socket
import sys
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from worker.listener import Listener
from worker.protocol import ConnectionLimits, bounded_protocol

BACKLOG = 2048  # a burst of 64+ connections must not be refused while the loop is busy
RESERVED_DESCRIPTORS = 256  # beside connections: store files, S3 connections, logs
log = logging.getLogger("modelyard.worker")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a ':'); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def configure_logging(level: int = logging.INFO) -> None:
    """Messages of the worker and uvicorn (start-up, warnings, errors), with a time, on stderr."""
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    app: ASGIApp,
    sock: socket.socket,
    on_ready: Callable[[str], None] | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT or SIGTERM; ``on_ready`` gets the base URL.

    Returns after a graceful shutdown on SIGINT (Ctrl-C); SIGTERM ends the process once shut down.
    """
    host, port = sock.getsockname()[:2]
    limits = limits or ConnectionLimits()
    limits = dataclasses.replace(limits, max_connections=affordable_connections(limits.max_connections))
    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed
        http=bounded_protocol(limits),  # httptools, with bounds on heads, time and connections
        ws="none",
        log_config=None,
        access_log=False,  # ours is worker.accesslog's JSON line
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float works: it goes to call_later
    )
    server = Server(config)
    if on_ready is not None:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        on_ready(f"http://{netloc}")
    # What start-up made (modules, boto3's and huggingface_hub's tables: most of the heap) lives as long as
    # the process: kept out of the collector's sight, a full collection under load took 50-70 ms about
    # once a second (bench load), each one a pause for every request in flight.
    gc.collect()
    gc.freeze()
    # uvicorn re-raises Ctrl-C after its graceful shutdown: that is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


class Server(uvicorn.Server):
    """uvicorn's server, accepting through :class:`~worker.listener.Listener` (every waiting connection each turn)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup (0.54) for bound sockets: the protocol factory it makes there, and a
        # Listener where it would call loop.create_server.
        if not sockets:
            raise ValueError("serve a bound socket: worker.server.bind")
        await self.lifespan.startup()
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        self.servers = [Listener(loop, sock, create_protocol) for sock in sockets]  # type: ignore[misc]
        self.started = True


def affordable_connections(wanted: int) -> int:
    """``wanted``, or fewer if the file descriptors this process may open (raised to the hard limit) are short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted
    affordable = max(1, soft - RESERVED_DESCRIPTORS)
    if affordable < wanted:
        log.warning("at most %d connections: the process may open %d files (ulimit -n)", affordable, soft)
    return min(wanted, affordable)
