"""The catalog site at ``/``: which file under the store's ``site/`` a URL path names, and its type.

Pure: a decoded URL path in, a store key relative to ``site/`` out. A path with '.', '..', empty
components, backslashes or NUL never becomes a key, so nothing outside ``site/`` can be reached.

Example::

    >>> site_key("/"), site_key("/models/gpt2/")
    ('index.html', 'models/gpt2/index.html')
    >>> content_type("style.css")
    'text/css; charset=utf-8'
"""

from __future__ import annotations

import mimetypes

from pipeline.errors import StoreError
from pipeline.store.backend import check_key
from worker.errors import RegistryError

INDEX = "index.html"
CACHE_CONTROL = "public, max-age=60"  # the site changes on every publish: browsers recheck soon
MAX_PATH_LENGTH = 1024


def site_key(path: str) -> str:
    """The key under ``site/`` that serves ``path``: directories (a trailing '/') serve their index.html."""
    if len(path) > MAX_PATH_LENGTH or not path.startswith("/"):
        raise RegistryError.not_found()
    relative = path[1:]
    if relative == "" or relative.endswith("/"):
        relative += INDEX
    try:
        return check_key(relative)
    except StoreError as error:
        raise RegistryError.bad_path("invalid path: '.', '..', empty components and backslashes are refused") from error


def content_type(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    if guessed is None:
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "application/json", "image/svg+xml"):
        return f"{guessed}; charset=utf-8"
    return guessed
