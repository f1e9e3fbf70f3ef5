"""The catalog site at ``/``: which file under the store's ``site/`` a URL path names, and its type.

Pure: a decoded URL path in, a store key relative to ``site/`` out. A path with '.', '..', empty
components, backslashes or NUL never becomes a key, so nothing outside ``site/`` can be reached.

Example::

    >>> site_key("/"), site_key("/models/gpt2/")
    ('index.html', 'models/gpt2/index.html')
    >>> content_type("style.css")
    'text/css; charset=utf-8'
    >>> cache_control("assets/site.0123456789abcdef.js")
    'public, max-age=31536000, immutable'
"""

from __future__ import annotations

import mimetypes

from pipeline.errors import StoreError
from pipeline.site.assets import is_hashed_asset
from pipeline.store.backend import check_key
from worker.errors import RegistryError

INDEX = "index.html"
NOT_FOUND_PAGE = "404.html"  # the site's own 404 page, served for any unknown path outside /v2/
CACHE_CONTROL = "public, max-age=60"  # the site changes on every publish: browsers recheck soon
IMMUTABLE = "public, max-age=31536000, immutable"  # a name that carries its content hash never changes
MAX_PATH_BYTES = 512  # S3 keys stop at 1024 bytes, prefix included: stay well below
MAX_COMPONENT_BYTES = 255  # NAME_MAX: a longer file name cannot exist (and the OS would refuse to look)


def site_key(path: str) -> str:
    """The key under ``site/`` that serves ``path``: directories (a trailing '/') serve their index.html."""
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES or not path.startswith("/"):
        raise RegistryError.not_found()
    relative = path[1:]
    if relative == "" or relative.endswith("/"):
        relative += INDEX
    try:
        key = check_key(relative)
    except StoreError as error:
        raise RegistryError.bad_path("invalid path: '.', '..', empty components and backslashes are refused") from error
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES for part in key.split("/")):
        raise RegistryError.not_found()
    return key


def cache_control(key: str) -> str:
    """Assets named by their content hash are kept forever; pages are rechecked after a minute."""
    return IMMUTABLE if is_hashed_asset(key) else CACHE_CONTROL


def content_type(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    if guessed is None:
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "application/json", "image/svg+xml"):
        return f"{guessed}; charset=utf-8"
    return guessed
