"""Reproducible tar: the entry list and header bytes of DESIGN §4, as pure functions.

The rules, so that the same files give the same bytes on every machine:

- entries sorted bytewise by path, with an explicit entry for every directory;
- mtime = ``SOURCE_DATE_EPOCH`` (default 0), uid/gid 0, empty user and group names;
- mode 0644 for files and 0755 for directories (world-readable, so non-root users can read what they copy);
- ustar headers; a PAX extended header only when ustar cannot hold the name (too long or not ASCII)
  or the size (8 GiB and more), and then with no time records. No host information of any kind.

Example::

    >>> entries = plan_entries([("config.json", 612), ("1_Pooling/config.json", 190)])
    >>> [(e.name, e.kind) for e in entries]
    [('1_Pooling', 'dir'), ('1_Pooling/config.json', 'reg'), ('config.json', 'reg')]
    >>> len(header(entries[0], mtime=0))
    512
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import LayerInputError

BLOCK_SIZE = 512
END_OF_ARCHIVE = bytes(2 * BLOCK_SIZE)
FILE_MODE = 0o644
DIR_MODE = 0o755

# The name that eStargz readers reserve for the table of contents at the root of a layer.
TOC_NAME = "stargz.index.json"
# Root entries that stargz snapshotters take as prefetch instructions, and hide from the mounted image.
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
PREFETCH_LANDMARK = ".prefetch.landmark"
_RESERVED = {
    TOC_NAME: "eStargz readers take it for the layer's table of contents",
    NO_PREFETCH_LANDMARK: "stargz snapshotters take it as a prefetch instruction and hide it",
    PREFETCH_LANDMARK: "stargz snapshotters take it as a prefetch instruction and hide it",
}

_NAME_FIELD = 100
_PREFIX_FIELD = 155
_MAX_USTAR_SIZE = 8**11 - 1  # 11 octal digits
_PAX_HEADER_NAME = b"././@PaxHeader"

EntryKind = Literal["dir", "reg"]


@dataclass(frozen=True)
class TarEntry:
    """One entry of the layer's tar stream. ``name`` is a clean relative path without a trailing slash."""

    name: str
    kind: EntryKind
    size: int = 0

    @property
    def mode(self) -> int:
        return DIR_MODE if self.kind == "dir" else FILE_MODE


def check_path(path: str) -> None:
    """Refuse a path that could escape the image root or that tar cannot carry faithfully."""
    problem = None
    if not path:
        problem = "is empty"
    elif path.startswith("/"):
        problem = "is absolute"
    elif "\0" in path:
        problem = "contains a NUL byte"
    elif "\\" in path:
        problem = "contains a backslash"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    elif path in _RESERVED:
        problem = f"is reserved at the root: {_RESERVED[path]}"
    else:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            problem = "is not valid UTF-8"
    if problem:
        raise LayerInputError(f"file path {path!r} {problem}")


def plan_entries(files: Iterable[tuple[str, int]]) -> list[TarEntry]:
    """Turn (path, size) pairs into the sorted tar entry list, adding every parent directory.

    Paths are checked with :func:`check_path`; duplicates and a file that is also a directory are refused.
    """
    entries: dict[str, TarEntry] = {}
    for path, size in files:
        check_path(path)
        if size < 0:
            raise LayerInputError(f"file {path!r} has a negative size {size}")
        if path in entries:
            what = "a directory" if entries[path].kind == "dir" else "listed twice"
            raise LayerInputError(f"file path {path!r} is {what}")
        entries[path] = TarEntry(path, "reg", size)
        parent = path.rpartition("/")[0]
        while parent:
            existing = entries.get(parent)
            if existing is not None:
                if existing.kind != "dir":
                    raise LayerInputError(f"file path {parent!r} is also the directory of {path!r}")
                break
            entries[parent] = TarEntry(parent, "dir")
            parent = parent.rpartition("/")[0]
    return sorted(entries.values(), key=lambda e: e.name.encode("utf-8"))


def padding(size: int) -> bytes:
    """The zero bytes that pad ``size`` bytes of content to a whole block."""
    return bytes(-size % BLOCK_SIZE)


def header(entry: TarEntry, mtime: int) -> bytes:
    """The header block(s) of ``entry``: a PAX extended header when needed, then the ustar header."""
    name = entry.name + "/" if entry.kind == "dir" else entry.name
    encoded = name.encode("utf-8")
    records: list[tuple[str, str]] = []
    split = _split_ustar_name(encoded) if name.isascii() else None
    if split is None:
        records.append(("path", name))
        # The ustar field still gets an ASCII stand-in for readers that ignore PAX.
        split = (b"", name.encode("ascii", "ignore")[:_NAME_FIELD])
    size = entry.size
    if size > _MAX_USTAR_SIZE:
        records.append(("size", str(size)))
        size = 0
    prefix, short_name = split
    block = _ustar_block(
        name=short_name,
        prefix=prefix,
        mode=entry.mode,
        size=size,
        mtime=mtime,
        typeflag=b"5" if entry.kind == "dir" else b"0",
    )
    if not records:
        return block
    pax = b"".join(_pax_record(key, value) for key, value in records)
    pax_header = _ustar_block(
        name=_PAX_HEADER_NAME, prefix=b"", mode=FILE_MODE, size=len(pax), mtime=mtime, typeflag=b"x"
    )
    return pax_header + pax + padding(len(pax)) + block


def regular_file_header(name: str, size: int, mtime: int) -> bytes:
    """The header of a regular file that is not part of the model (the eStargz TOC, the landmark)."""
    return header(TarEntry(name, "reg", size), mtime)


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a name into ustar's (prefix, name) fields, or None when it does not fit."""
    if len(name) <= _NAME_FIELD:
        return b"", name
    # The prefix/name boundary must be a slash; try the rightmost one that keeps the prefix short enough.
    search_end = min(len(name) - 1, _PREFIX_FIELD)
    cut = name.rfind(b"/", 0, search_end + 1)
    while cut > 0:
        rest = name[cut + 1 :]
        if 0 < len(rest) <= _NAME_FIELD:
            return name[:cut], rest
        if len(rest) > _NAME_FIELD:
            return None
        cut = name.rfind(b"/", 0, cut)
    return None


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode("ascii") + body


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _ustar_block(*, name: bytes, prefix: bytes, mode: int, size: int, mtime: int, typeflag: bytes) -> bytes:
    block = bytearray(BLOCK_SIZE)
    block[0 : len(name)] = name
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)  # uid
    block[116:124] = _octal(0, 8)  # gid
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[148:156] = b" " * 8  # checksum is computed with its own field as spaces
    block[156:157] = typeflag
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[329:337] = _octal(0, 8)  # devmajor
    block[337:345] = _octal(0, 8)  # devminor
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)
