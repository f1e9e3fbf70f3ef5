"""Stream a model's files from the Hub into the layer writer: no disk, the download overlapped with the build.

The layer writer reads each file through :meth:`HubStream.layer_files` (``LayerFile.open()`` gives a
reader), in the order the tar needs. Behind the readers, up to ``connections`` ranged GETs of
``segment_size`` bytes run ahead of the writer, across file boundaries, into a bounded in-memory
window: memory stays near ``connections * segment_size`` whatever the model's size, and the bytes
arrive at the speed of all connections together, so one slow connection does not set the pace.

Requests follow huggingface_hub's conventions: its shared HTTP session, the ``resolve`` URL under
``HF_ENDPOINT``, its token and user agent (:func:`huggingface_hub.utils.build_hf_headers`). A redirect
to another origin (the CDN behind LFS, the Xet bridge) is followed without the token, and its target
is reused for the file's next ranges until it stops working.

Integrity is total and costs no second read. A non-LFS file's git blob id is computed by its reader as
the bytes pass; an LFS file's sha256 is the one the layer writer computes anyway, checked before the
layer is committed (:func:`pipeline.hub.verify.check_lfs_digests`). A mismatch, or a server sending
another size than the Hub lists, raises :class:`IntegrityError`: the layer upload is aborted and
nothing is published.

Faults: a dropped connection, a body shorter than its length, a timeout, a 429 or a 5xx resumes with a
Range request from the last byte received, with bounded retries and exponential backoff (the budget
refills whenever bytes arrive), so the rest of the model is never fetched again. A server that answers
200 to a Range request is detected: the bytes before the range are skipped, and from then on files are
fetched whole, one connection each.

Example::

    hub = HubClient()
    snapshot = hub.snapshot("sentence-transformers/all-MiniLM-L6-v2", "7dbbc90392e2f80f3d3c277d6e90027e55de9125")
    with store.blob_writer() as blob, HubStream(hub, snapshot, snapshot.files) as stream:
        layer = write_layer(stream.layer_files(), blob)
        check_lfs_digests(snapshot.files, layer.files, model=snapshot.hf_id)
        blob.commit(expected=layer.digest)
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, cast
from urllib.parse import urljoin, urlsplit

import httpx2
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session

from pipeline import __version__
from pipeline.errors import HubError, IntegrityError
from pipeline.hub.client import TRANSIENT_EXCEPTIONS, TRANSIENT_STATUS, HubClient, RepoFile, RepoSnapshot
from pipeline.hub.verify import ContentCheck, check_empty_files
from pipeline.oci import tarball
from pipeline.oci.estargz import LayerFile

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PIECE_SIZE = 256 * 1024  # what a connection hands over at a time
MIN_SPLIT = 256 * 1024  # a stalled range is split only if each half is at least this
STALL_SECONDS = 0.2  # a head that brings nothing for this long, while the rest has arrived, is split
MAX_REDIRECTS = 10
MAX_BACKOFF = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class StreamOptions:
    """How hard to pull: ``connections`` ranged GETs of ``segment_size`` bytes in flight.

    The window ahead of the layer writer holds at most ``connections * segment_size`` bytes.
    """

    connections: int = 8
    segment_size: int = 8 * MiB

    def __post_init__(self) -> None:
        if self.connections < 1 or self.segment_size < PIECE_SIZE:
            raise ValueError(f"need at least one connection and segments of {PIECE_SIZE} bytes or more: {self}")


class HubStream:
    """The files of one snapshot, read straight from the Hub as the layer writer asks for them.

    Use it as a context manager: entering starts the downloads, leaving stops them (also on error).
    ``on_bytes`` receives the count of bytes as they arrive from the network (worker threads).
    """

    def __init__(
        self,
        hub: HubClient,
        snapshot: RepoSnapshot,
        files: Sequence[RepoFile],
        *,
        options: StreamOptions | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.model = snapshot.hf_id
        self._order = tar_order(files)
        check_empty_files(self.model, [f for f in self._order if f.size == 0])  # never read: checked now
        self._streamed = [f for f in self._order if f.size]
        self._position = {f.path: i for i, f in enumerate(self._streamed)}
        self._fetcher = _Fetcher(hub, snapshot)
        self._window = _Window(self._streamed, self._fetcher, options or StreamOptions(), on_bytes)

    def __enter__(self) -> HubStream:
        self._window.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every download in flight and drop what the window holds."""
        self._window.close()

    def layer_files(self) -> list[LayerFile]:
        """The layer writer's input, in tar order; each ``open()`` reads the file from the Hub."""
        return [LayerFile(f.path, f.size, self._opener(f)) for f in self._order]

    def read(self, file: RepoFile) -> bytes:
        """The whole content of one small file (a model card), verified, outside the window."""
        pieces: list[bytes] = []
        span = _Span(0, file.size)

        def keep(piece: bytes) -> int:
            piece = piece[: span.end - span.position]
            pieces.append(piece)
            span.position += len(piece)
            return len(piece)

        self._fetcher.fetch(file, span, keep)
        data = b"".join(pieces)
        check = ContentCheck(self.model, file)
        check.update(data)
        check.finish()
        return data

    def _opener(self, file: RepoFile) -> Callable[[], BinaryIO]:
        def open_file() -> BinaryIO:
            if file.size == 0:
                return cast(BinaryIO, _EmptyReader())
            return cast(BinaryIO, _FileReader(self._window, self._position[file.path], ContentCheck(self.model, file)))

        return open_file


def tar_order(files: Sequence[RepoFile]) -> list[RepoFile]:
    """``files`` in the order the layer's tar holds them, which is the order the writer reads them in."""
    by_path = {f.path: f for f in files}
    return [by_path[e.name] for e in tarball.plan_entries((f.path, f.size) for f in files) if e.kind == "reg"]


class _FileReader:
    """What ``LayerFile.open()`` returns: a file's bytes from the window, checked as they pass."""

    def __init__(self, window: _Window, position: int, check: ContentCheck) -> None:
        self._window = window
        self._index = position
        self._check = check
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes (all that is left if fewer, or with ``size`` < 0); b"" at the end."""
        remaining = self._check.file.size - self._offset
        if size < 0 or size > remaining:
            size = remaining
        if size == 0:
            return b""
        data = self._window.read(self._index, self._offset, size)
        self._offset += len(data)
        self._check.update(data)
        if self._offset == self._check.file.size:
            self._check.finish()  # raises before the writer sees the file's last bytes
        return data

    def close(self) -> None:
        """Nothing to release: the window belongs to the stream."""

    def __enter__(self) -> _FileReader:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


class _EmptyReader:
    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None: ...


# The window: segments in flight, in order, handed to the readers


@dataclass
class _Span:
    """Where a fetch is: the next byte to arrive, and the end (which only ever moves back, when split)."""

    position: int
    end: int


@dataclass(eq=False)
class _Segment:
    """Bytes ``start`` to ``span.end`` of one file, as they arrive."""

    index: int  # position of the file in stream order
    start: int
    span: _Span
    pieces: deque[bytes] = field(default_factory=deque)
    buffered: int = 0  # bytes in ``pieces``, not yet read
    done: bool = False  # every byte has arrived
    error: BaseException | None = None  # the fetch gave up
    dropped: bool = False  # no longer wanted: its fetch stops at the next piece


Deliver = Callable[[bytes], int]  # takes a piece (up to its span's end), returns how much it took


class _Cancelled(Exception):
    """The segment's fetch is no longer wanted (the stream closed, or the reader went elsewhere)."""


class _Window:
    """Schedules ranged fetches ahead of the reader and hands their bytes over in order.

    At most ``connections`` segments exist at a time, the head one being read; each buffers at most
    ``segment_size`` bytes (a fetch that gets ahead waits), so memory is bounded. When the reader
    waits on the head alone (every later segment has arrived) and the head makes no progress, the
    rest of the head is split and its second half fetched on another connection: a slow connection
    gets less and less of the work instead of setting the pace.
    """

    def __init__(
        self,
        files: Sequence[RepoFile],
        fetcher: _Fetcher,
        options: StreamOptions,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self._files = files
        self._fetcher = fetcher
        self._options = options
        self._on_bytes = on_bytes
        self._cond = threading.Condition()
        self._active: deque[_Segment] = deque()
        self._cursor = (0, 0)  # the next (file, offset) to schedule
        self._reading = (0, 0)  # the next (file, offset) the reader wants
        self._closed = False
        self._pool = ThreadPoolExecutor(options.connections, thread_name_prefix="hub-stream")

    def start(self) -> None:
        with self._cond:
            self._schedule()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._active.clear()
            self._cond.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self, index: int, offset: int, size: int) -> bytes:
        """``size`` bytes of file ``index`` from ``offset`` (the caller never asks past the file's end)."""
        taken: list[bytes] = []
        wanted = size
        with self._cond:
            if (index, offset) != self._reading:
                self._restart_at(index, offset)  # the writer went elsewhere: forget what was fetched ahead
            while wanted:
                if self._closed:
                    raise HubError(f"{self._fetcher.model}: the download was stopped")
                head = self._active[0]
                if head.pieces:
                    piece = head.pieces.popleft()
                    if len(piece) > wanted:
                        head.pieces.appendleft(piece[wanted:])
                        piece = piece[:wanted]
                    head.buffered -= len(piece)
                    wanted -= len(piece)
                    taken.append(piece)
                    self._cond.notify_all()  # a fetch waiting for room may go on
                elif head.error is not None:
                    raise head.error
                elif head.done:
                    self._active.popleft()
                    self._schedule()
                else:
                    arrived = head.span.position
                    self._cond.wait(STALL_SECONDS)
                    if head.span.position == arrived and not head.pieces:
                        self._split(head)
            end = offset + size
            self._reading = (index, end) if end < self._files[index].size else (index + 1, 0)
            if self._active and not self._active[0].pieces and self._active[0].done:
                self._active.popleft()  # the file's last segment: make room for the next one now
                self._schedule()
        return taken[0] if len(taken) == 1 else b"".join(taken)

    def _split(self, head: _Segment) -> None:
        """Give the second half of a stalled head to another connection, if nothing else is in the way."""
        span = head.span
        remaining = span.end - span.position
        if self._fetcher.ranges_ignored or remaining < 2 * MIN_SPLIT:
            return
        if not all(s.done for s in list(self._active)[1:]):
            return  # the other connections are still busy: the head is not what holds the reader
        middle = span.position + remaining // 2
        second = _Segment(head.index, middle, _Span(middle, span.end))
        span.end = middle
        self._active.insert(1, second)
        self._pool.submit(self._fetch, second)
        log.debug(
            "%s: split a stalled range of %s at byte %d", self._fetcher.model, self._files[head.index].path, middle
        )

    def _restart_at(self, index: int, offset: int) -> None:
        for segment in self._active:
            segment.dropped = True
        self._active.clear()
        self._cond.notify_all()
        self._cursor = self._reading = (index, offset)
        self._schedule()

    def _schedule(self) -> None:
        """Start fetches until ``connections`` segments are in the window (called holding the lock)."""
        while not self._closed and len(self._active) < self._options.connections:
            index, offset = self._cursor
            if index >= len(self._files):
                return
            size = self._files[index].size
            end = size if self._fetcher.ranges_ignored else min(offset + self._options.segment_size, size)
            self._cursor = (index, end) if end < size else (index + 1, 0)
            segment = _Segment(index, offset, _Span(offset, end))
            self._active.append(segment)
            self._pool.submit(self._fetch, segment)

    def _fetch(self, segment: _Segment) -> None:
        try:
            self._fetcher.fetch(self._files[segment.index], segment.span, self._deliverer(segment))
        except _Cancelled:
            return
        except BaseException as err:
            with self._cond:
                segment.error = err
                self._cond.notify_all()
            return
        with self._cond:
            segment.done = True
            self._cond.notify_all()

    def _deliverer(self, segment: _Segment) -> Callable[[bytes], int]:
        room = self._options.segment_size

        def deliver(piece: bytes) -> int:
            with self._cond:
                while segment.buffered >= room and not (self._closed or segment.dropped):
                    self._cond.wait()
                if self._closed or segment.dropped:
                    raise _Cancelled
                span = segment.span
                piece = piece[: span.end - span.position]  # the end may have moved back (a split)
                if piece:
                    segment.pieces.append(piece)
                    segment.buffered += len(piece)
                    span.position += len(piece)
                    self._cond.notify_all()
            if self._on_bytes is not None and piece:
                self._on_bytes(len(piece))
            return len(piece)

        return deliver


# HTTP: one file's bytes, resumed after faults


class _Transient(Exception):
    """A failure worth another try (network, short body, 408/429/5xx)."""


class _Fetcher:
    """GETs byte ranges of one snapshot's files: redirects, resumption, and checks on what comes back."""

    def __init__(self, hub: HubClient, snapshot: RepoSnapshot) -> None:
        self.model = snapshot.hf_id
        self.ranges_ignored = False  # a server answered 200 to a Range request: fetch files whole
        self._hub = hub
        self._snapshot = snapshot
        self._session = get_session()
        self._headers = build_hf_headers(token=hub.token, library_name="modelyard", library_version=__version__)
        self._headers["accept-encoding"] = "identity"  # ranges address the bytes as stored
        self._endpoint = _origin(hub.endpoint)
        self._timeout = httpx2.Timeout(hub.timeout)  # the same for every Hub request (--hub-timeout)
        self._locations: dict[str, str] = {}  # repo path -> where its resolve URL redirected (a CDN)

    def fetch(self, file: RepoFile, span: _Span, deliver: Deliver) -> None:
        """Deliver the bytes of ``span`` of ``file`` in order, resuming after faults; raise when it cannot.

        ``deliver`` takes a piece up to ``span.end`` (which may move back meanwhile), advances
        ``span.position`` by what it took, and returns that count.
        """
        failures = 0
        delay = self._hub.backoff
        while span.position < span.end:
            before = span.position
            try:
                self._get(file, span, deliver)
                if span.position < span.end:
                    raise _Transient(f"the body ended at byte {span.position:,}")
            except _Transient as fault:
                if span.position > before:  # bytes came: this is a new fault, not the same one again
                    failures, delay = 0, self._hub.backoff
                failures += 1
                if failures > self._hub.retries:
                    raise HubError(
                        f"{self.model}: {file.path}: download failed {failures} times in a row at byte "
                        f"{span.position:,} of {file.size:,}: {fault}"
                    ) from fault
                log.warning(
                    "%s: %s: %s; resuming at byte %d in %.1f s", self.model, file.path, fault, span.position, delay
                )
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF)

    def _get(self, file: RepoFile, span: _Span, deliver: Deliver) -> None:
        """One GET of what is left of ``span``, following redirects."""
        url = self._locations.get(file.path) or self._resolve_url(file)
        for _ in range(MAX_REDIRECTS):
            whole = span.position == 0 and span.end == file.size
            headers = dict(self._headers)
            if _origin(url) != self._endpoint:
                headers.pop("authorization", None)  # the token is for the Hub, never for a CDN
            if not whole:
                headers["range"] = f"bytes={span.position}-{span.end - 1}"
            try:
                with self._session.stream(
                    "GET", url, headers=headers, follow_redirects=False, timeout=self._timeout
                ) as response:
                    if response.has_redirect_location:
                        url = urljoin(url, response.headers["location"])
                        self._locations[file.path] = url
                        continue
                    if response.status_code in (401, 403, 404, 410) and file.path in self._locations:
                        del self._locations[file.path]  # a signed CDN URL expired: ask the Hub again
                        url = self._resolve_url(file)
                        continue
                    self._check_status(file, url, response)
                    self._read_body(file, span, response, whole, deliver)
                    return
            except TRANSIENT_EXCEPTIONS as err:
                raise _Transient(f"{_describe(err)} from {_origin_text(url)}") from err
        raise HubError(f"{self.model}: {file.path}: more than {MAX_REDIRECTS} redirects from {self._resolve_url(file)}")

    def _resolve_url(self, file: RepoFile) -> str:
        return hf_hub_url(
            self._snapshot.hf_id, file.path, revision=self._snapshot.revision, endpoint=self._hub.endpoint
        )

    def _check_status(self, file: RepoFile, url: str, response: httpx2.Response) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 416:
            raise IntegrityError(
                f"{self.model}: {file.path}: the Hub lists {file.size:,} bytes, but {_origin_text(url)} has fewer "
                "(416 Range Not Satisfiable); not published"
            )
        if status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status} from {_origin_text(url)}")
        response.read()  # error bodies are small; huggingface_hub reads the message from them
        self._hub.raise_for_status(response, f"download {file.path}", self._snapshot.hf_id, self._snapshot.revision)
        raise HubError(f"{self.model}: {file.path}: unexpected HTTP {status} from {_origin_text(url)}")

    def _read_body(self, file: RepoFile, span: _Span, response: httpx2.Response, whole: bool, deliver: Deliver) -> None:
        skip = 0
        if response.status_code == 206:
            first, total = _content_range(response)
            if total is not None and total != file.size:
                raise self._size_changed(file, total, response)
            if first != span.position:
                raise _Transient(f"asked for byte {span.position:,}, got a range from byte {first:,}")
        else:
            length = response.headers.get("content-length")
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            if length is not None and length.isdigit() and not encoded and int(length) != file.size:
                raise self._size_changed(file, int(length), response)
            if not whole:
                skip = span.position  # the whole file came: skip to where the range starts
                self._ignoring_ranges(response)
        batch: list[bytes] = []  # small network reads, handed over a piece at a time
        pending = 0

        def hand_over() -> bool:
            """Deliver what is batched; False when the span's end was reached (or moved back)."""
            nonlocal pending
            if not batch:
                return span.position < span.end
            piece = batch[0] if len(batch) == 1 else b"".join(batch)
            batch.clear()
            pending = 0
            return deliver(piece) == len(piece) and span.position < span.end

        try:
            for data in response.iter_bytes():
                if skip:
                    if len(data) <= skip:
                        skip -= len(data)
                        continue
                    data, skip = data[skip:], 0
                batch.append(data)
                pending += len(data)
                if (pending >= PIECE_SIZE or pending >= span.end - span.position) and not hand_over():
                    return  # closing mid-body (a whole file for a range, a split) drops the connection, as it must
        finally:
            hand_over()  # also what came before a fault: the retry resumes after it

    def _ignoring_ranges(self, response: httpx2.Response) -> None:
        if not self.ranges_ignored:
            self.ranges_ignored = True
            log.warning(
                "%s ignores Range requests (200 instead of 206): fetching files whole, one connection each",
                _origin_text(str(response.request.url)),
            )

    def _size_changed(self, file: RepoFile, size: int, response: httpx2.Response) -> IntegrityError:
        return IntegrityError(
            f"{self.model}: {file.path}: the Hub lists {file.size:,} bytes, "
            f"{_origin_text(str(response.request.url))} sends {size:,}; not published"
        )


def _content_range(response: httpx2.Response) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206 response."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    if match is None:
        raise _Transient(f"206 without a valid Content-Range: {response.headers.get('content-range')!r}")
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
