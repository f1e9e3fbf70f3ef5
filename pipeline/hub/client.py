"""Hugging Face: list a pinned revision's files with their sizes and digests, and download them.

Everything goes through ``huggingface_hub``, which honours ``HF_ENDPOINT`` (a mirror, an enterprise
proxy, the test fixture hub) and ``HF_TOKEN`` (gated and private models). What the Hub lists is
checked by :mod:`pipeline.hub.verify`.

Every request has a timeout (a Hub that stalls is a transient failure) and the same bounded retries.
The file list comes from the tree listing, followed page by page through its ``Link`` headers: the
list model_info gives may be cut short for a large repository, so it serves only as a cross-check.

Example::

    hub = HubClient()
    snapshot = hub.snapshot("sentence-transformers/all-MiniLM-L6-v2", "7dbbc90392e2f80f3d3c277d6e90027e55de9125")
    paths = hub.download(snapshot, snapshot.files, cache_dir=Path("cache"))
    check_git_blob_ids(snapshot.files, paths, model=snapshot.hf_id)
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi, constants, get_session, hf_hub_download, hf_raise_for_status
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from pipeline.errors import GatedModelError, HubError, HubUnavailableError, MissingRepoError, MissingRevisionError

log = logging.getLogger(__name__)
T = TypeVar("T")

CANONICAL_URL = "https://huggingface.co"  # what images record as their source, whichever endpoint served them
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_EXCEPTIONS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
DOWNLOAD_THREADS = 8
DEFAULT_TIMEOUT = 10.0  # seconds without a byte from the Hub before a request counts as failed
MAX_TREE_PAGES = 10_000  # 10 million files: past that a Link header is going round in circles


@dataclass(frozen=True)
class RepoFile:
    """One file of a pinned revision, as the Hub lists it."""

    path: str
    size: int
    lfs_sha256: str | None = None  # hex, for LFS files
    git_blob_id: str | None = None  # hex sha1 of the git blob, for every file


@dataclass(frozen=True)
class RepoHead:
    """The commit a branch of a model repository points at now."""

    hf_id: str  # as the Hub spells it
    branch: str | None  # None: the repository's default branch
    revision: str
    gated: bool = False
    private: bool = False


@dataclass(frozen=True)
class RepoSnapshot:
    """What the Hub says about one pinned revision of a model."""

    hf_id: str  # as the Hub spells it
    revision: str
    files: tuple[RepoFile, ...]
    license: str = ""
    pipeline_tag: str = ""
    library_name: str = ""
    tags: tuple[str, ...] = ()
    gated: bool = False
    private: bool = False
    languages: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    parameters: int | None = None  # from the Hub's safetensors metadata, when the weights are safetensors
    tensor_types: tuple[tuple[str, int], ...] = ()  # (dtype, parameter count), largest first
    downloads: int | None = None  # over the last 30 days, when the snapshot was taken
    likes: int | None = None
    card_data: dict[str, Any] = field(default_factory=dict)  # the model card's front matter

    @property
    def source_url(self) -> str:
        return f"{CANONICAL_URL}/{self.hf_id}"

    def metadata(self) -> dict[str, Any]:
        """The catalog fields that come from the Hub."""
        return {
            "hf_id": self.hf_id,
            "license": self.license,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "hub_tags": list(self.tags),
            "gated": self.gated,
            "languages": list(self.languages),
            "base_models": list(self.base_models),
            "parameters": self.parameters,
            "tensor_types": dict(self.tensor_types),
            "downloads": self.downloads,
            "likes": self.likes,
            "card_data": self.card_data,
        }


class HubClient:
    """The Hub, through huggingface_hub, with bounded retries and errors that say how to fix them.

    ``retries`` is how many times a transient failure (network error, timeout, 429, 5xx) is retried,
    with exponential backoff starting at ``backoff`` seconds; ``timeout`` is how long a request may
    wait for the Hub's next byte.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token  # None: huggingface_hub reads HF_TOKEN or the saved login
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def snapshot(self, hf_id: str, revision: str) -> RepoSnapshot:
        """List the files of ``hf_id`` at ``revision`` with their sizes and digests, and the model's metadata."""
        info = self._call(
            f"list {hf_id}@{revision[:12]}",
            hf_id,
            revision,
            lambda: self.api.model_info(hf_id, revision=revision, timeout=self.timeout),
        )
        files = self.list_files(hf_id, revision)
        unlisted = sorted({s.rfilename for s in info.siblings or []} - {f.path for f in files})
        if unlisted:
            raise HubError(
                f"{hf_id}@{revision}: the Hub's tree listing lacks {len(unlisted)} file(s) its model info names "
                f"(first: {unlisted[0]}); the listing is incomplete, try again later"
            )
        card: dict[str, Any] = info.card_data.to_dict() if info.card_data is not None else {}  # type: ignore[no-untyped-call]
        safetensors = info.safetensors
        return RepoSnapshot(
            hf_id=info.id or hf_id,
            revision=revision,
            files=tuple(files),
            license=_license(card.get("license"), info.tags or []),
            pipeline_tag=info.pipeline_tag or "",
            library_name=info.library_name or "",
            tags=tuple(info.tags or ()),
            gated=bool(info.gated),
            private=bool(info.private),
            languages=_strings(card.get("language")),
            base_models=tuple(info.base_models or ()) or _strings(card.get("base_model")),
            parameters=safetensors.total if safetensors is not None else None,
            tensor_types=tuple(sorted(safetensors.parameters.items(), key=lambda item: (-item[1], item[0])))
            if safetensors is not None
            else (),
            downloads=info.downloads,
            likes=info.likes,
            card_data=_json_safe(card),
        )

    def list_files(self, hf_id: str, revision: str) -> list[RepoFile]:
        """Every file of ``hf_id`` at ``revision``, sorted by path, from the tree listing's pages."""
        url: str | None = f"{self.endpoint}/api/models/{hf_id}/tree/{quote(revision, safe='')}"
        params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
        seen: set[str] = set()
        files: dict[str, RepoFile] = {}
        for page in range(1, MAX_TREE_PAGES + 1):
            if url is None:
                return [files[path] for path in sorted(files)]
            seen.add(url)
            response = self._call(
                f"list the files of {hf_id}@{revision[:12]} (page {page})",
                hf_id,
                revision,
                functools.partial(self._get, url, params),
            )
            for item in response.json():
                if item.get("type") == "file":
                    listed = _tree_file(hf_id, revision, item)
                    files[listed.path] = listed
            url, params = response.links.get("next", {}).get("url"), None  # the next link holds the query
            if url in seen:
                raise HubError(f"{hf_id}@{revision}: the Hub's tree listing links back to a page already read")
        raise HubError(f"{hf_id}@{revision}: the Hub's tree listing goes on past {MAX_TREE_PAGES} pages")

    def _get(self, url: str, params: dict[str, str] | None) -> httpx2.Response:
        """GET a Hub API URL with the token and the timeout, raising huggingface_hub's typed errors."""
        headers = build_hf_headers(token=self.token)
        response = get_session().get(url, params=params, headers=headers, timeout=self.timeout)
        hf_raise_for_status(response)
        return response

    def head(self, hf_id: str, branch: str | None = None) -> RepoHead:
        """The commit ``branch`` points at now (None: the repository's default branch, whatever its name)."""
        where = branch or "its default branch"
        info = self._call(
            f"look up {hf_id}@{where}",
            hf_id,
            where,
            lambda: self.api.model_info(hf_id, revision=branch, timeout=self.timeout),
        )
        if not info.sha:
            raise HubError(f"{hf_id}@{where}: the Hub answered without a commit sha")
        return RepoHead(info.id or hf_id, branch, info.sha, gated=bool(info.gated), private=bool(info.private))

    def download(
        self,
        snapshot: RepoSnapshot,
        files: Sequence[RepoFile],
        cache_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> dict[str, Path]:
        """Download ``files`` into the huggingface_hub cache at ``cache_dir``; their local paths by repo path.

        Files already in the cache are not downloaded again. ``on_bytes`` receives byte counts as they
        arrive (negative after a retry restarts a file).
        """

        def fetch(repo_file: RepoFile) -> tuple[str, Path]:
            counted = 0

            def count(n: int) -> None:
                nonlocal counted
                counted += n
                if on_bytes is not None:
                    on_bytes(n)

            def attempt() -> str:
                nonlocal counted
                if counted:
                    count(-counted)  # a retry downloads (or resumes) anew: take back what was counted
                return hf_hub_download(
                    snapshot.hf_id,
                    repo_file.path,
                    revision=snapshot.revision,
                    cache_dir=cache_dir,
                    endpoint=self.endpoint,
                    token=self.token,
                    etag_timeout=self.timeout,  # the GET itself times out after HF_HUB_DOWNLOAD_TIMEOUT (10 s)
                    tqdm_class=_progress_class(count),
                )

            local = self._call(f"download {repo_file.path}", snapshot.hf_id, snapshot.revision, attempt)
            return repo_file.path, Path(local)

        try:
            with ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="hub-download") as pool:
                return dict(pool.map(fetch, files))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise HubError(f"disk full while downloading {snapshot.hf_id} into {cache_dir}") from err
            raise

    def raise_for_status(self, response: httpx2.Response, what: str, hf_id: str, revision: str) -> None:
        """Raise the :class:`HubError` that an error response means (gated, not found, ...), as for any Hub call."""
        self._call(what, hf_id, revision, lambda: hf_raise_for_status(response))

    def _call(self, what: str, hf_id: str, revision: str, function: Callable[[], T]) -> T:
        """Run a Hub operation, retrying transient failures, translating the others."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return function()
            except GatedRepoError as err:
                raise GatedModelError(
                    f"{hf_id} is gated: accept its conditions at {CANONICAL_URL}/{hf_id} while logged in, then "
                    "set HF_TOKEN to a token of that account (or run `hf auth login`)"
                ) from err
            except RevisionNotFoundError as err:
                raise MissingRevisionError(
                    f"{hf_id} has no revision {revision}: pin a commit that exists "
                    f"(see {CANONICAL_URL}/{hf_id}/commits)"
                ) from err
            except DisabledRepoError as err:
                raise MissingRepoError(f"{hf_id} has been disabled on the Hub") from err
            except RepositoryNotFoundError as err:
                raise MissingRepoError(
                    f"{hf_id} was not found on {self.endpoint}: check the name; if it is private, set HF_TOKEN to a "
                    "token with access"
                ) from err
            except EntryNotFoundError as err:
                raise HubError(f"{what}: {hf_id}@{revision} has no such file") from err
            except Exception as err:
                if not _is_transient(err):
                    raise HubError(f"{what} from {self.endpoint} failed: {_describe(err)}") from err
                if attempt == self.retries:
                    raise HubUnavailableError(f"{what} from {self.endpoint} failed: {_describe(err)}") from err
                log.warning("%s failed (%s); retrying in %.0f s", what, _describe(err), delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _tree_file(hf_id: str, revision: str, item: dict[str, Any]) -> RepoFile:
    """One file entry of the tree listing, checked: every file needs its size and a digest to verify."""
    lfs = item.get("lfs")
    try:
        path, size, blob_id = str(item["path"]), int(item["size"]), str(item.get("oid") or "")
        lfs_sha256, size = (str(lfs["oid"]), int(lfs["size"])) if lfs is not None else (None, size)
    except (KeyError, TypeError, ValueError) as err:
        what = f"{hf_id}@{revision}: the Hub listed a file without its path, size or digest"
        raise HubError(f"{what}: {item!r:.200}") from err
    if not blob_id and lfs_sha256 is None:
        raise HubError(f"{hf_id}@{revision}: the Hub listed {path} without a digest")
    return RepoFile(path=path, size=size, lfs_sha256=lfs_sha256, git_blob_id=blob_id or None)


def _is_transient(err: BaseException) -> bool:
    """Network errors, timeouts, 429 and 5xx, also when huggingface_hub wrapped them."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TRANSIENT_EXCEPTIONS):
            return True
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            if seen.response.status_code in TRANSIENT_STATUS:
                return True
            if seen.response.status_code in (401, 403, 404):
                return False
        if isinstance(seen, OSError) and "Consistency check failed" in str(seen):
            return True  # the download ended short: fetch it again
        seen = seen.__cause__ or seen.__context__
    return isinstance(err, LocalEntryNotFoundError)  # the HEAD failed for want of a connection


def _describe(err: BaseException) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return first_line


def _license(card_license: object, tags: Iterable[str]) -> str:
    if isinstance(card_license, str):
        return card_license
    if isinstance(card_license, list) and card_license:
        return " OR ".join(str(item) for item in card_license)
    for tag in tags:
        if tag.startswith("license:"):
            return tag.removeprefix("license:")
    return ""


def _strings(value: object) -> tuple[str, ...]:
    """A front-matter field that may be one string or a list of them."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(item) for item in value if isinstance(item, str | int | float))
    return ()


def _json_safe(value: Any) -> Any:
    """Front matter as plain JSON: YAML dates and other scalars become strings."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _progress_class(on_bytes: Callable[[int], None]) -> type:
    """A tqdm stand-in for huggingface_hub that forwards byte counts to ``on_bytes``."""

    class Progress:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
            if initial:
                on_bytes(initial)

        def update(self, n: float | None = 1) -> None:
            on_bytes(int(n or 0))

        def update_transfer(self, n: float | None = 1) -> None:
            """Network bytes of a xet download: counted by ``update`` as they land."""

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...

        def set_description(self, *args: Any, **kwargs: Any) -> None: ...

        def refresh(self) -> None: ...

        def close(self) -> None: ...

        def __enter__(self) -> Progress:
            return self

        def __exit__(self, *args: object) -> None: ...

    return Progress
