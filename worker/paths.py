"""Which registry endpoint a ``/v2/...`` path names, checked against the distribution-spec grammar.

Pure: a decoded path in, an :class:`Endpoint` (or a :class:`RegistryError`) out. A name, tag or
digest that passes here matches the spec's grammar, so it can become a store key safely ('..',
absolute paths and odd characters cannot pass).

Example::

    >>> parse_v2_path("/v2/org/model/manifests/latest")
    Manifest(name='org/model', reference='latest')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.digest import is_digest
from pipeline.names import is_name, is_tag
from worker.errors import RegistryError

MAX_PATH_LENGTH = 2048
_ENDPOINT = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<reference>[^/]+)")
_TAGS_LIST = re.compile(r"/v2/(?P<name>.+)/tags/list")


@dataclass(frozen=True)
class Base:
    """``/v2/``: the API version check."""


@dataclass(frozen=True)
class Catalog:
    """``/v2/_catalog``: every repository."""


@dataclass(frozen=True)
class TagList:
    name: str


@dataclass(frozen=True)
class Manifest:
    name: str
    reference: str  # a tag or a digest

    @property
    def by_digest(self) -> bool:
        return ":" in self.reference


@dataclass(frozen=True)
class Blob:
    name: str
    digest: str


@dataclass(frozen=True)
class Referrers:
    name: str
    digest: str


Endpoint = Base | Catalog | TagList | Manifest | Blob | Referrers


def has_encoded_slash(raw_path: bytes) -> bool:
    """Whether the undecoded path hides a '/' or '\\' as %2F / %5C (never needed by a real client)."""
    lowered = raw_path.lower()
    return b"%2f" in lowered or b"%5c" in lowered


def parse_v2_path(path: str) -> Endpoint:
    """The endpoint of a decoded path under ``/v2``; raises :class:`RegistryError` for anything else."""
    if len(path) > MAX_PATH_LENGTH:
        raise RegistryError.bad_path(f"path longer than {MAX_PATH_LENGTH} characters")
    if path in ("/v2", "/v2/"):
        return Base()
    if path == "/v2/_catalog":
        return Catalog()
    if match := _TAGS_LIST.fullmatch(path):
        return TagList(_checked_name(match["name"]))
    match = _ENDPOINT.fullmatch(path)
    if match is None:
        raise RegistryError.not_found("not a registry endpoint: expected /v2/<name>/(manifests|blobs|tags|referrers)")
    name, kind, reference = _checked_name(match["name"]), match["kind"], match["reference"]
    if kind == "manifests":
        if ":" in reference:
            return Manifest(name, _checked_digest(reference))
        if not is_tag(reference):
            # No manifest can have this reference: unknown, as the conformance suite expects (a
            # client asking for `.INVALID_MANIFEST_NAME` must see 404 MANIFEST_UNKNOWN, not 400).
            raise RegistryError.manifest_unknown(name, reference)
        return Manifest(name, reference)
    if kind == "blobs":
        return Blob(name, _checked_digest(reference))
    return Referrers(name, _checked_digest(reference))


def _checked_name(name: str) -> str:
    if not is_name(name):
        raise RegistryError.name_invalid(name)
    return name


def _checked_digest(digest: str) -> str:
    if not is_digest(digest):
        raise RegistryError.digest_invalid(digest)
    return digest
