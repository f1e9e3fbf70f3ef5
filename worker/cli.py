"""``modelyard serve``: the store as a read-only OCI registry (and the catalog site) over HTTP.

:func:`register` adds the subcommand to the ``modelyard`` parser::

    commands = parser.add_subparsers(dest="command")
    register(commands)
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.environment import apply_environment, check_environment
from pipeline.errors import MissingStoreError, ModelyardError, StoreError
from pipeline.store import DEFAULT_STORE, STORE_HELP, Store, open_store
from pipeline.store.s3 import S3Backend
from worker.accesslog import AccessLog
from worker.app import create_app
from worker.config import RegistryConfig
from worker.protocol import ConnectionLimits
from worker.server import bind, configure_logging, serve

EXAMPLES = """\
examples:
  modelyard serve                                   # ./store on http://127.0.0.1:5000
  modelyard serve --store s3://models/prod --host 0.0.0.0 --port 8080
  modelyard serve --store s3://models/prod --presign-seconds 600    # whole-blob GETs go to S3 directly

then, from any OCI client:
  skopeo inspect --tls-verify=false docker://127.0.0.1:5000/org/model:latest
  buildah build --tls-verify=false -f Dockerfile .   # with: COPY --from=127.0.0.1:5000/org/model /config.json .

Every option can come from the environment instead: MODELYARD_STORE, MODELYARD_HOST, MODELYARD_PORT,
MODELYARD_CACHE_SECONDS, ... (the option's name, upper-cased); a flag wins over its variable.
S3 settings come from the usual AWS environment: AWS_ENDPOINT_URL (R2, MinIO), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION. Requests are logged as JSON lines on stdout; pull counters are
at /metrics, liveness of the store at /healthz. Clients other than on this machine need TLS in
front (a reverse proxy), or to be told the registry is insecure.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``modelyard`` subcommands."""
    command = commands.add_parser(
        "serve",
        help="serve the store as a read-only OCI registry and the catalog site",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the store over HTTP: the OCI distribution API (pull only) under /v2/,\n"
        "so skopeo, oras, podman, buildah, containerd and BuildKit pull from it (lazily, with eStargz),\n"
        "and the catalog site from the store's site/ at /.",
        epilog=EXAMPLES,
    )
    command.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    command.add_argument("--port", type=int, default=5000, help="port to listen on; 0 picks a free one (default: 5000)")
    command.add_argument(
        "--cache-seconds",
        type=float,
        default=RegistryConfig.cache_seconds,
        metavar="S",
        help="reuse tag lookups and listings this long; a newly published tag shows within S (default: %(default)s)",
    )
    redirect = command.add_mutually_exclusive_group()
    redirect.add_argument(
        "--public-blob-url",
        metavar="URL",
        help="answer whole-blob GETs with 307 to URL/blobs/sha256/<hex> (a public bucket or CDN over the store)",
    )
    redirect.add_argument(
        "--presign-seconds",
        type=int,
        default=0,
        metavar="S",
        help="answer whole-blob GETs with 307 to a presigned S3 URL valid S seconds (ranges are always served "
        "here). A presigned URL names the access key id (never the secret): presign with a read-only key",
    )
    command.add_argument("--no-access-log", action="store_true", help="do not log a JSON line per request")
    command.add_argument(
        "--virtual-cache-mib",
        type=int,
        default=RegistryConfig.virtual_cache_bytes // (1024 * 1024),
        metavar="N",
        help="memory for checked chunks of virtual blobs (a ModelPack's per-file layers, decompressed out of "
        "the image layer), so a popular file is decompressed once; 0 turns it off (default: %(default)s)",
    )
    limits = ConnectionLimits()
    command.add_argument(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        metavar="N",
        help="open connections at most; past N the one waiting longest for a request is closed, or, when all "
        "are busy, the newcomer gets 503 with Retry-After (default: %(default)s)",
    )
    command.add_argument(
        "--head-timeout",
        type=float,
        default=limits.head_timeout,
        metavar="S",
        help="a request head must arrive whole within S seconds (default: %(default)s)",
    )
    command.add_argument(
        "--idle-timeout",
        type=float,
        default=limits.idle_timeout,
        metavar="S",
        help="close a keep-alive connection after S seconds without a request (default: %(default)s)",
    )
    apply_environment(command)  # MODELYARD_PORT=8080 and the like: how containers are configured
    command.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    check_environment(args)
    if args.public_blob_url and args.presign_seconds:
        raise ModelyardError(
            "--public-blob-url and --presign-seconds exclude each other (flags or MODELYARD_ variables)"
        )
    store = open_serving_store(args.store)
    config = RegistryConfig(
        cache_seconds=args.cache_seconds,
        public_blob_url=args.public_blob_url,
        presign_seconds=args.presign_seconds,
        virtual_cache_bytes=max(args.virtual_cache_mib, 0) * 1024 * 1024,
    )
    configure_logging()
    access_log = None if args.no_access_log else AccessLog(sys.stdout)
    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        raise ModelyardError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from error

    def announce(url: str) -> None:
        print(f"serving {store.backend.url()} on {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
        host = url.removeprefix("http://")
        print(f"try: skopeo inspect --tls-verify=false docker://{host}/<name>:latest", file=sys.stderr, flush=True)

    try:
        limits = ConnectionLimits(
            head_timeout=args.head_timeout, idle_timeout=args.idle_timeout, max_connections=args.max_connections
        )
        serve(create_app(store, config, access_log=access_log), sock, on_ready=announce, limits=limits)
    finally:
        if access_log is not None:
            access_log.flush()
    return 0


def open_serving_store(location: str) -> Store:
    """The store to serve; on S3 with short timeouts and few retries, so a store that is down gets 503 fast.

    A store that does not exist is refused (a mistyped --store); one that cannot be reached right now is
    served anyway, answering 503 until it is back.
    """
    if not location.startswith("s3://"):
        return open_store(location, existing=True)
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=3,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 2},
        max_pool_connections=64,  # one per worker thread reading blobs at once
    )
    store = Store(S3Backend.from_url(location, client=boto3.session.Session().client("s3", config=config)))
    try:
        exists = store.backend.exists()
    except MissingStoreError:
        raise
    except StoreError as error:
        print(f"warning: {error}; serving anyway (503 until the store answers)", file=sys.stderr, flush=True)
        return store
    if not exists:
        raise MissingStoreError(f"no store at {store.backend.url()}: nothing is stored under that prefix")
    return store
