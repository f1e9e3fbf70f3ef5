"""How the pages write numbers, and the picture of where a model's bytes are.

Example::

    >>> human_bytes(90_868_376), human_count(22_713_728), short_sha("8b3219a92973c328a8e2")
    ('90.9 MB', '22.7M', '8b3219a')
    >>> [(s.label, round(s.fraction, 2)) for s in shares({"a.safetensors": 90, "config.json": 10}, by="type")]
    [('safetensors', 0.9), ('json', 0.1)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

MAX_SHARES = 6  # the rest is "other": a bar of twenty slivers says nothing


def human_bytes(size: int | None) -> str:
    """Decimal units, as disks and the Hub count them: ``1.2 GB``."""
    if size is None:
        return "—"
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def human_count(count: int | None) -> str:
    """Parameter counts as people say them: ``110M``, ``6.7B``."""
    if count is None:
        return "—"
    for divisor, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= divisor:
            value = count / divisor
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(count)


def short_sha(revision: str) -> str:
    return revision[:7]


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab``: enough to recognise, the full digest is next to it."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else digest[:12]


@dataclass(frozen=True)
class Share:
    """One segment of the size bar: a label, its bytes, and where it sits (fractions of the whole)."""

    label: str
    size: int
    fraction: float
    offset: float
    index: int  # its colour


def shares(sizes: Mapping[str, int], by: Literal["type", "folder"]) -> list[Share]:
    """Bytes grouped by file type (extension) or by top-level folder, largest first, the tail as "other"."""
    totals: dict[str, int] = {}
    for path, size in sizes.items():
        totals[_group(path, by)] = totals.get(_group(path, by), 0) + size
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) > MAX_SHARES:
        ranked = [*ranked[: MAX_SHARES - 1], ("other", sum(size for _, size in ranked[MAX_SHARES - 1 :]))]
    whole = sum(size for _, size in ranked) or 1
    result, offset = [], 0.0
    for index, (label, size) in enumerate(ranked):
        result.append(Share(label, size, size / whole, offset, index))
        offset += size / whole
    return result


def _group(path: str, by: Literal["type", "folder"]) -> str:
    if by == "folder":
        folder, slash, _ = path.partition("/")
        return f"{folder}/" if slash else "(top level)"
    name = path.rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem else "(no extension)"
