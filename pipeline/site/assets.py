"""The site's static files (``site/assets/``), published under names that carry their content hash.

A hashed name changes whenever the bytes do, so browsers may keep an asset forever
(``Cache-Control: immutable``, see :func:`worker.site.cache_control`) and still never see a stale one.

Example::

    >>> hashed_name("style.css", b"body{}")
    'style.7c98040a54165758.css'
    >>> is_hashed_asset("assets/style.7c98040a54165758.css"), is_hashed_asset("index.html")
    (True, False)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ModelyardError

ASSETS_DIR = "assets"
HASH_CHARS = 16
_HASHED = re.compile(rf"{ASSETS_DIR}/[^/]+\.[0-9a-f]{{{HASH_CHARS}}}\.[A-Za-z0-9]+")


def hashed_name(name: str, data: bytes) -> str:
    stem, dot, extension = name.rpartition(".")
    digest = hashlib.sha256(data).hexdigest()[:HASH_CHARS]
    return f"{stem}.{digest}.{extension}" if dot else f"{name}.{digest}"


def is_hashed_asset(key: str) -> bool:
    """Whether a site path is an asset with its content hash in its name (immutable)."""
    return _HASHED.fullmatch(key) is not None


@dataclass(frozen=True)
class Assets:
    """The static files by their plain name, and the path each is published under."""

    files: dict[str, bytes]  # published path -> bytes
    paths: dict[str, str]  # plain name ("style.css") -> published path ("assets/style.<hash>.css")

    @classmethod
    def load(cls, directory: Path) -> Assets:
        if not directory.is_dir():
            raise ModelyardError(f"{directory}: the site's assets are missing (a checkout of modelyard has them)")
        files, paths = {}, {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                data = path.read_bytes()
                published = f"{ASSETS_DIR}/{hashed_name(path.name, data)}"
                files[published] = data
                paths[path.name] = published
        return cls(files, paths)

    def path(self, name: str) -> str:
        try:
            return self.paths[name]
        except KeyError:
            raise ModelyardError(f"the site's templates use {ASSETS_DIR}/{name}, which does not exist") from None
