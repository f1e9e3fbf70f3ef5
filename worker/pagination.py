"""Pagination of tag lists and the catalog (``?n=<count>&last=<entry>``), as the distribution spec has it.

Pure: a sorted list and the query values in, one page and the ``Link`` to the next out.

Example::

    >>> page = paginate(["a", "b", "c"], n="2", last=None, default_count=None)
    >>> page.items, page.link("/v2/org/model/tags/list")
    (['a', 'b'], '</v2/org/model/tags/list?n=2&last=b>; rel="next"')
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from urllib.parse import quote

from worker.errors import RegistryError

MAX_PAGE = 1000  # what one answer holds at most, whatever n asks for
_MAX_N_DIGITS = 9


@dataclass(frozen=True)
class Page:
    items: list[str]
    count: int  # the page size asked for (or imposed), carried into the Link
    more: bool  # whether entries follow this page

    def link(self, path: str) -> str | None:
        """The RFC 8288 ``Link`` header value to the next page, or None on the last page."""
        if not self.more or not self.items:
            return None
        return f'<{path}?n={self.count}&last={quote(self.items[-1], safe="/")}>; rel="next"'


def paginate(entries: list[str], n: str | None, last: str | None, default_count: int | None) -> Page:
    """The entries of sorted ``entries`` after ``last``, at most ``n`` (or ``default_count``, or all).

    Raises :class:`RegistryError` (400 PAGINATION_NUMBER_INVALID) for an ``n`` that is not a
    non-negative integer.
    """
    count = default_count if n is None else _parse_count(n)
    start = 0 if last is None else bisect.bisect_right(entries, last)
    if count is None:
        return Page(entries[start:], len(entries), more=False)
    count = min(count, MAX_PAGE)
    items = entries[start : start + count]
    return Page(items, count, more=start + count < len(entries))


def _parse_count(n: str) -> int:
    if not n.isascii() or not n.isdigit() or len(n) > _MAX_N_DIGITS:
        raise RegistryError.pagination_invalid(f"n must be a non-negative integer, got {n[:32]!r}")
    return int(n)
