"""The registry front-end as an ASGI app: the read-only OCI distribution API and the catalog site.

Routes (GET and HEAD only; anything else is 405 UNSUPPORTED):

    /v2/                                   API version check
    /v2/_catalog?n=&last=                  repositories, paginated with a Link header
    /v2/<name>/tags/list?n=&last=          tags, sorted, paginated
    /v2/<name>/manifests/<tag|digest>      stored bytes verbatim, Content-Type = their media type
    /v2/<name>/blobs/<digest>              streamed; Range (single, multi, suffix), If-None-Match, If-Range;
                                           a ModelPack's raw layers are virtual blobs cut out of the layer
    /v2/<name>/referrers/<digest>          an OCI index of the manifests naming it as subject (?artifactType=)
    /healthz                               200 when the store answers, else 503
    /metrics                               pull counters (Prometheus text)
    /...                                   the catalog site, from the store's site/

Example::

    app = create_app(open_store("store"), access_log=AccessLog(sys.stdout))
    uvicorn.run(app, host="127.0.0.1", port=5000)
"""

from __future__ import annotations

import functools
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.oci.image import MEDIA_TYPE_INDEX, canonical_json
from pipeline.store import Store
from pipeline.store.store import REPOSITORIES_PREFIX
from worker import paths, site
from worker.accesslog import AccessLog
from worker.config import RegistryConfig
from worker.content import Content, StoredManifest, in_thread
from worker.errors import RegistryError
from worker.guard import Guard
from worker.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from worker.metrics import Metrics
from worker.pagination import MAX_PAGE, paginate
from worker.ranges import (
    MalformedRange,
    Multipart,
    UnsatisfiableRange,
    etag_matches,
    if_range_allows,
    parse_range,
)
from worker.streams import ReadRange, open_multipart, open_stream
from worker.virtual import VirtualContent

IMMUTABLE = "public, max-age=31536000, immutable"
BLOB_TYPE = "application/octet-stream"
JSON_TYPE = "application/json"
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def create_app(
    store: Store,
    config: RegistryConfig | None = None,
    metrics: Metrics | None = None,
    access_log: AccessLog | None = None,
) -> ASGIApp:
    """The ASGI app serving ``store``: the registry API under /v2/, the site at /."""
    registry = Registry(store, config or RegistryConfig(), metrics or Metrics())
    routes = [
        Route("/v2", registry.v2),
        Route("/v2/{path:path}", registry.v2),
        Route("/healthz", registry.healthz),
        Route("/metrics", registry.metrics_text),
        Route("/{path:path}", registry.site),
    ]
    # A bare Router, not a Starlette app: the guard answers every error itself (JSON, never a plain 500).
    return Guard(Router(routes=routes, default=_no_route), registry.metrics, access_log)


class Registry:
    """The endpoints. Each either returns a response or raises :class:`RegistryError`."""

    def __init__(self, store: Store, config: RegistryConfig, metrics: Metrics) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.content = Content(store, config.cache_seconds)
        self.virtual = VirtualContent(store, config.cache_seconds, config.virtual_cache_bytes)

    async def v2(self, request: Request) -> Response:
        endpoint = paths.parse_v2_path(request.scope["path"])
        if isinstance(endpoint, paths.Manifest):
            return await self.manifest(request, endpoint)
        if isinstance(endpoint, paths.Blob):
            return await self.blob(request, endpoint)
        if isinstance(endpoint, paths.TagList):
            return await self.tag_list(request, endpoint)
        if isinstance(endpoint, paths.Catalog):
            return await self.catalog(request)
        if isinstance(endpoint, paths.Referrers):
            return await self.referrers(request, endpoint)
        return Response(b"{}", headers=API_VERSION, media_type=JSON_TYPE)

    # manifests

    async def manifest(self, request: Request, endpoint: paths.Manifest) -> Response:
        name, reference = endpoint.name, endpoint.reference
        if endpoint.by_digest:
            if not await self.content.repository_exists(name):
                raise RegistryError.name_unknown(name)
            digest = reference
        else:
            descriptor = await self.content.resolve_tag(name, reference)
            if descriptor is None:
                if not await self.content.repository_exists(name):
                    raise RegistryError.name_unknown(name)
                raise RegistryError.manifest_unknown(name, reference)
            digest = descriptor.digest
        manifest = await self.content.manifest(digest)
        if manifest is None:
            raise RegistryError.manifest_unknown(name, reference)
        headers = _manifest_headers(manifest, immutable=endpoint.by_digest)
        if _not_modified(request, headers["ETag"]):
            return _not_modified_response(headers)
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        if endpoint.by_digest:
            self.metrics.count_pull_by_digest(name)
        else:
            self.metrics.count_pull(name, reference)
        return Response(manifest.data, headers=headers)

    # blobs

    async def blob(self, request: Request, endpoint: paths.Blob) -> Response:
        digest = endpoint.digest
        if not await self.content.repository_exists(endpoint.name):
            raise RegistryError.name_unknown(endpoint.name)
        size = await self.content.blob_size(digest)
        virtual = None if size is not None else await self.virtual.blob(endpoint.name, digest)
        read: ReadRange
        if virtual is not None:
            size, read = virtual.size, virtual.read
        elif size is not None:
            read = functools.partial(self.content.read_blob, digest)
        else:
            raise RegistryError.blob_unknown(digest)
        etag = f'"{digest}"'
        headers = {
            **API_VERSION,
            "Docker-Content-Digest": digest,
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "Accept-Ranges": "bytes",
            "Content-Type": BLOB_TYPE,
        }
        if _not_modified(request, etag):
            return _not_modified_response(headers)
        if request.method == "HEAD":  # Range applies to GET only (RFC 9110 §14.2)
            return Response(b"", headers={**headers, "Content-Length": str(size)})
        range_header = request.headers.get("range")
        if range_header is None or not if_range_allows(request.headers.get("if-range"), etag):
            # Only a stored blob has a URL of its own; a virtual one is made here.
            redirect = await self._blob_redirect(digest) if virtual is None else None
            if redirect is not None:
                return RedirectResponse(redirect, 307, headers=API_VERSION | {"Docker-Content-Digest": digest})
            body = await open_stream(read(0, size), size)
            return StreamingResponse(body, headers={**headers, "Content-Length": str(size)})
        try:
            ranges = parse_range(range_header, size)
        except MalformedRange as error:
            raise RegistryError.range_invalid(str(error)) from error
        except UnsatisfiableRange as error:
            raise RegistryError.range_unsatisfiable(size) from error
        if len(ranges) == 1:
            (only,) = ranges
            body = await open_stream(read(only.start, only.end), only.length)
            headers |= {"Content-Length": str(only.length), "Content-Range": only.content_range(size)}
            return StreamingResponse(body, status_code=206, headers=headers)
        parts = Multipart(ranges, size, boundary=secrets.token_hex(16), part_type=BLOB_TYPE)
        body = await open_multipart(parts, read)
        headers |= {"Content-Length": str(parts.content_length), "Content-Type": parts.content_type}
        return StreamingResponse(body, status_code=206, headers=headers)

    async def _blob_redirect(self, digest: str) -> str | None:
        """Where a whole-blob GET goes instead, when a public or presigned URL is configured."""
        if self.config.public_blob_url is not None:
            return self.config.public_url_of(digest)
        if self.config.presign_seconds > 0:
            seconds = self.config.presign_seconds
            return await in_thread(lambda: self.store.presigned_blob_url(digest, seconds))
        return None

    # listings

    async def tag_list(self, request: Request, endpoint: paths.TagList) -> Response:
        tags = await self.content.tags(endpoint.name)
        if not tags:
            raise RegistryError.name_unknown(endpoint.name)
        page = paginate(tags, request.query_params.get("n"), request.query_params.get("last"), default_count=None)
        body = canonical_json({"name": endpoint.name, "tags": page.items})
        return _json_page(body, page.link(request.scope["path"]))

    async def catalog(self, request: Request) -> Response:
        names = await self.content.repositories()
        page = paginate(names, request.query_params.get("n"), request.query_params.get("last"), MAX_PAGE)
        return _json_page(canonical_json({"repositories": page.items}), page.link(request.scope["path"]))

    async def referrers(self, request: Request, endpoint: paths.Referrers) -> Response:
        if not await self.content.repository_exists(endpoint.name):
            raise RegistryError.name_unknown(endpoint.name)
        artifact_type = request.query_params.get("artifactType")
        found = await self.virtual.referrers(endpoint.name, endpoint.digest, artifact_type)
        headers = dict(API_VERSION)
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [d.to_json() for d in found]}
        return Response(canonical_json(index), headers=headers, media_type=MEDIA_TYPE_INDEX)

    # operations

    async def healthz(self, request: Request) -> Response:
        """200 while the store answers (a stat of a small key), else 503 through the guard."""
        await in_thread(lambda: self.store.backend.stat(REPOSITORIES_PREFIX.rstrip("/")))
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE, headers={"Cache-Control": "no-store"})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    # the catalog site

    async def site(self, request: Request) -> Response:
        path = request.scope["path"]
        try:
            key = site.site_key(path)
        except RegistryError as error:
            if error.status == 404:
                return await self._site_not_found(request, error)
            raise
        size = await self.content.site_size(key)
        if size is None:
            if not path.endswith("/") and await self.content.site_size(f"{key}/{site.INDEX}") is not None:
                return RedirectResponse(path + "/", 308)  # a directory: relative links need the slash
            return await self._site_not_found(request, RegistryError.not_found())
        return await self._site_file(request, key, size, 200)

    async def _site_not_found(self, request: Request, error: RegistryError) -> Response:
        """A browser gets the site's own 404 page (status 404) when the site has one; a client, JSON."""
        size = await self.content.site_size(site.NOT_FOUND_PAGE)
        if size is None:
            raise error
        return await self._site_file(request, site.NOT_FOUND_PAGE, size, 404)

    async def _site_file(self, request: Request, key: str, size: int, status: int) -> Response:
        headers = {
            "Content-Type": site.content_type(key),
            "Content-Length": str(size),
            "Cache-Control": site.cache_control(key) if status == 200 else "no-store",
        }
        if request.method == "HEAD":
            return Response(b"", status_code=status, headers=headers)
        body = await open_stream(self.content.read_site(key, size), size)
        return StreamingResponse(body, status_code=status, headers=headers)


async def _no_route(scope: Scope, receive: Receive, send: Send) -> None:
    """What no route matches (a path with a newline escapes even the catch-all '.*')."""
    raise RegistryError.not_found()


def _manifest_headers(manifest: StoredManifest, immutable: bool) -> dict[str, str]:
    headers = {
        **API_VERSION,
        "Content-Type": manifest.media_type,
        "Content-Length": str(len(manifest.data)),
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
    }
    if immutable:
        headers["Cache-Control"] = IMMUTABLE
    return headers


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    return header is not None and etag_matches(header, etag)


def _not_modified_response(headers: dict[str, str]) -> Response:
    return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Length"})


def _json_page(body: bytes, link: str | None) -> Response:
    headers = dict(API_VERSION)
    if link is not None:
        headers["Link"] = link
    return Response(body, headers=headers, media_type=JSON_TYPE)
