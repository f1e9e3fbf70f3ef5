"""modelyard's registry front-end: a read-only OCI distribution API (and the catalog site) over the store.

    cli.py          `modelyard serve`: options, the store to serve, start-up
    server.py       uvicorn (uvloop, httptools) on a socket bound first
    protocol.py     the HTTP protocol: bounded request heads, JSON answers to broken requests
    guard.py        around every request: read-only, error answers, counters, the access log
    app.py          the routes: /v2/ endpoints, /healthz, /metrics, the site
    content.py      the store as the registry reads it: async (worker threads) and cached
    streams.py      response bodies streamed from the store in bounded pieces
    pure parts:     paths.py (endpoint grammar), ranges.py (Range and conditionals),
                    pagination.py (n/last/Link), site.py (URL to site/ key), errors.py (spec JSON),
                    cache.py (expiring entries), metrics.py (Prometheus text), accesslog.py (JSON lines)

Example::

    from pipeline.store import open_store
    from worker.app import create_app
    app = create_app(open_store("store"))      # any ASGI server can run it
"""
