"""Copy published images to any OCI registry (GHCR, Docker Hub, Harbor, Artifact Registry), digests intact.

oras-py provides the registry session: credentials from the Docker config (``~/.docker/config.json``,
``DOCKER_CONFIG``, credential helpers) or ``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``, and the token
flows registries use. The bytes are sent as stored: blobs streamed from the store in one monolithic
upload each (which every registry accepts, and never held whole in memory), manifests and indexes
verbatim with their own media type, so the same digest means the same bytes everywhere. Order: blobs,
then manifests by digest, then the index by digest, then its tags; blobs the registry has are skipped.

A registry that is down fails the push in seconds: every request has a connect and a read timeout,
and a failed one (no connection, timeout, 429, 5xx) is retried :data:`RETRY_DELAYS` times, each retry
logged. The error names the registry's URL and why, in one line. (oras-py's own retry loop, which
sleeps 3 to 83 s between six attempts, is bypassed.)

The other formats go too: a ModelPack's virtual blobs are materialized (cut out of the eStargz layer,
every chunk checked) and uploaded under the same digests, and each format manifest follows the image
index it names as subject. A registry without the referrers API (it answers no ``OCI-Subject``)
gets the referrers tag ``sha256-<index hex>`` instead, an index of the formats, as the
distribution-spec asks of clients, so ``oras discover`` lists them there too.

Example::

    push_images(open_store("store"), "ghcr.io/my-org/models", names=["gpt2"])
    # then: skopeo inspect docker://ghcr.io/my-org/models/gpt2:latest
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import oras.provider
import requests
from requests.adapters import HTTPAdapter

from pipeline.digest import hex_of, sha256_digest
from pipeline.errors import ModelyardError, NotFoundError
from pipeline.names import check_name
from pipeline.oci.image import MANIFEST_MEDIA_TYPES, MEDIA_TYPE_INDEX, Descriptor, canonical_json
from pipeline.oci.references import reachable
from pipeline.oci.referrers import referrer_descriptor
from pipeline.oci.virtual import Blobs
from pipeline.store import Store

log = logging.getLogger(__name__)
UPLOAD_PIECE = 8 * 1024 * 1024
CONNECT_TIMEOUT = 5.0  # seconds to open a connection
READ_TIMEOUT = 120.0  # seconds of silence while waiting for an answer (a registry may verify a big blob first)
RETRY_DELAYS = (0.5, 2.0)  # seconds before each retry of a failed request: three attempts in all
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# oras-py's Registry.do_request without its retry decorator (which sleeps 3, 5, 11, 29, 83 s).
_do_request = oras.provider.Registry.do_request.__wrapped__


class PushError(ModelyardError):
    """The destination registry refused something."""


@dataclass(frozen=True)
class PushOutcome:
    name: str
    tags: tuple[str, ...]
    digest: str
    uploaded: int  # blob bytes sent (blobs the registry had are skipped)
    skipped_blobs: int


class _StoreStream:
    """A blob read from the store as a file-like body with a known length, so requests streams it.

    http.client reads a body 8 KiB at a time and accepts short reads, so each read hands out a slice of
    the current piece: nothing already read is copied again.
    """

    def __init__(self, pieces: Iterator[bytes], size: int) -> None:
        self._pieces = pieces
        self._piece = b""
        self._offset = 0
        self.len = size  # requests reads the body length from here

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            rest, self._piece = self._piece[self._offset :], b""
            return rest + b"".join(self._pieces)
        while self._offset >= len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._piece, self._offset = piece, 0
        data = self._piece[self._offset : self._offset + size]
        self._offset += len(data)
        return data


class Destination:
    """A registry and an optional repository prefix, e.g. ``ghcr.io/my-org/models``."""

    def __init__(self, location: str, insecure: bool = False) -> None:
        host, _, prefix = location.strip("/").partition("/")
        if not host:
            raise PushError(f"{location!r} names no registry; expected host[:port][/prefix]")
        if prefix:
            check_name(prefix)
        self.host = host
        self.prefix = prefix
        self.scheme = "http" if insecure else "https"
        self.base_url = f"{self.scheme}://{host}"
        self.registry = oras.provider.Registry(hostname=host, insecure=insecure)
        for scheme in ("http://", "https://"):  # the token flows use this session too
            self.registry.session.mount(scheme, _TimeoutAdapter())
        username, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
        if username and password:
            self.registry.auth.set_basic_auth(username, password)
        else:
            self.registry.auth.load_configs(self.registry.get_container(f"{host}/{prefix or 'x'}"))

    def repository(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def image(self, name: str) -> str:
        """``host/prefix/name``, for messages."""
        return f"{self.host}/{self.repository(name)}"

    def url(self, name: str, suffix: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repository(name)}/{suffix}"

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request, retried (with a fresh ``body()`` when it is a function) as :data:`RETRY_DELAYS` says.

        A response with a retryable status is returned as it is once the retries are spent: the caller
        reports it with what it was doing.
        """
        attempts = len(RETRY_DELAYS) + 1
        for attempt in range(1, attempts + 1):
            try:
                data = body() if callable(body) else body
                response: requests.Response = _do_request(
                    self.registry, url, method, data=data, headers=dict(headers or {})
                )
            except requests.RequestException as err:
                failure = _describe(err)
                if isinstance(err, requests.exceptions.SSLError) or attempt == attempts:
                    raise PushError(
                        f"cannot push to the registry at {self.base_url}: {failure} "
                        f"({attempt} attempt{'s' if attempt > 1 else ''}; {method} {url})"
                    ) from err
            except ValueError as err:  # oras-py: the registry asked for authentication we cannot give
                raise PushError(f"the registry at {self.base_url} refused {method} {url}: {err}") from err
            else:
                if response.status_code not in RETRY_STATUS or attempt == attempts:
                    return response
                failure = f"HTTP {response.status_code}"
            delay = RETRY_DELAYS[attempt - 1]
            log.warning("push: %s %s: %s; retry %d of %d in %.1f s", method, url, failure, attempt, attempts - 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request of the session a connect and a read timeout (oras-py sets none)."""

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        return super().send(request, stream, timeout or (CONNECT_TIMEOUT, READ_TIMEOUT), verify, cert, proxies)


def _describe(err: requests.RequestException) -> str:
    """What went wrong, in a few words: "connection refused", "no answer within 120 s", ..."""
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS handshake failed (a registry that speaks plain HTTP needs --insecure)"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT:.0f} s"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return f"no answer within {READ_TIMEOUT:.0f} s"
    reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(err))
    if reason:
        text = reason.group(1).strip()
        return text[:1].lower() + text[1:]
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


def push_images(
    store: Store,
    destination: str,
    *,
    names: Sequence[str] | None = None,
    insecure: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> list[PushOutcome]:
    """Push every tag of ``names`` (default: every repository) to ``destination``."""
    target = Destination(destination, insecure)
    outcomes = []
    for name in names or store.repositories():
        tags = store.tags(check_name(name))
        if not tags:
            raise NotFoundError(f"{name} has no tags in {store.backend.url()}")
        roots: dict[str, Descriptor] = {}
        tags_of: dict[str, list[str]] = {}
        for tag in tags:
            descriptor = store.get_tag(name, tag)
            if descriptor is not None:
                roots[descriptor.digest] = descriptor
                tags_of.setdefault(descriptor.digest, []).append(tag)
        for digest, root in roots.items():
            outcomes.append(_push_image(store, target, name, root, tags_of[digest], on_bytes))
    return outcomes


def _push_image(
    store: Store,
    target: Destination,
    name: str,
    root: Descriptor,
    tags: list[str],
    on_bytes: Callable[[int], None] | None,
) -> PushOutcome:
    descriptors = list({d.digest: d for d in reachable(store, root)}.values())  # parents first, each once
    blobs = Blobs(store)
    blobs.learn(descriptors)
    uploaded = skipped = 0
    for descriptor in descriptors:
        if descriptor.media_type in MANIFEST_MEDIA_TYPES:
            continue
        if _blob_exists(target, name, descriptor):
            skipped += 1
            continue
        _upload_blob(blobs, target, name, descriptor, on_bytes)
        uploaded += descriptor.size
    for descriptor in reversed([d for d in descriptors if d.media_type in MANIFEST_MEDIA_TYPES]):
        _put_manifest(store, target, name, descriptor, descriptor.digest)  # children before their index
    for tag in tags:
        _put_manifest(store, target, name, root, tag)
    return PushOutcome(name, tuple(tags), root.digest, uploaded, skipped)


def _blob_exists(target: Destination, name: str, descriptor: Descriptor) -> bool:
    response = target.request("HEAD", target.url(name, f"blobs/{descriptor.digest}"))
    return response.status_code == 200


def _upload_blob(
    blobs: Blobs, target: Destination, name: str, descriptor: Descriptor, on_bytes: Callable[[int], None] | None
) -> None:
    started = target.request("POST", target.url(name, "blobs/uploads/"))
    location = started.headers.get("Location")
    if started.status_code != 202 or not location:
        raise PushError(f"{target.image(name)}: the registry refused to start an upload ({started.status_code})")
    if location.startswith("/"):
        location = f"{target.scheme}://{target.host}{location}"
    separator = "&" if "?" in location else "?"

    sent = 0

    def pieces() -> Iterator[bytes]:
        nonlocal sent
        if sent and on_bytes is not None:
            on_bytes(-sent)  # a retry sends the blob anew: take back what the last attempt counted
        sent = 0
        for offset in range(0, descriptor.size, UPLOAD_PIECE):
            end = min(offset + UPLOAD_PIECE, descriptor.size)
            piece = b"".join(blobs.read_range(descriptor, offset, end))
            sent += len(piece)
            if on_bytes is not None:
                on_bytes(len(piece))
            yield piece

    response = target.request(
        "PUT",
        f"{location}{separator}digest={descriptor.digest}",
        body=lambda: _StoreStream(pieces(), descriptor.size),  # each attempt streams from the start
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
    )
    if response.status_code != 201:
        raise PushError(
            f"{target.image(name)}: upload of {descriptor.digest} failed ({response.status_code}): "
            f"{response.text[:300]}"
        )


def _put_manifest(store: Store, target: Destination, name: str, descriptor: Descriptor, reference: str) -> None:
    data = store.read_blob(descriptor.digest)  # the stored bytes, so the digest stays the same
    response = _put(target, name, reference, data, descriptor)
    document = json.loads(data)
    subject = document.get("subject")
    if reference == descriptor.digest and isinstance(subject, dict) and "OCI-Subject" not in response.headers:
        referrer = referrer_descriptor(descriptor.digest, descriptor.size, document)
        _add_to_referrers_tag(target, name, str(subject["digest"]), referrer)


def _add_to_referrers_tag(target: Destination, name: str, subject: str, referrer: Descriptor) -> None:
    """List ``referrer`` in the index the referrers tag schema keeps for ``subject`` (``sha256-<hex>``)."""
    tag = f"sha256-{hex_of(subject)}"
    current = target.request("GET", target.url(name, f"manifests/{tag}"), headers={"Accept": MEDIA_TYPE_INDEX})
    listed = current.json().get("manifests", []) if current.status_code == 200 else []
    if any(entry.get("digest") == referrer.digest for entry in listed):
        return
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [*listed, referrer.to_json()]}
    data = canonical_json(index)
    _put(target, name, tag, data, Descriptor(MEDIA_TYPE_INDEX, sha256_digest(data), len(data)))


def _put(target: Destination, name: str, reference: str, data: bytes, descriptor: Descriptor) -> requests.Response:
    response = target.request(
        "PUT",
        target.url(name, f"manifests/{reference}"),
        body=data,
        headers={"Content-Type": descriptor.media_type},
    )
    if response.status_code not in (200, 201):
        raise PushError(
            f"{target.image(name)}:{reference}: manifest refused ({response.status_code}): {response.text[:300]}"
        )
    pushed = response.headers.get("Docker-Content-Digest")
    if pushed and pushed != descriptor.digest:
        raise PushError(f"{target.image(name)}:{reference}: the registry stored {pushed}, not {descriptor.digest}")
    return response
