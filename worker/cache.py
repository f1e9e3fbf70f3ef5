"""A small in-process cache whose entries expire: tag lookups, listings and manifests stay fresh briefly.

Bounded in entries (the oldest insert goes first), so hostile lookups of endless unknown names
cannot grow it without limit. Not thread-safe: only the event loop touches it.

Example::

    tags = ExpiringCache[str, Descriptor | None](seconds=5, max_entries=10_000)
    value = tags.get("org/model:latest")
    if value is MISSING:
        tags.put("org/model:latest", lookup())
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final, Generic, Literal, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Missing(enum.Enum):
    MISSING = enum.auto()


MISSING: Final = _Missing.MISSING  # what get() answers for an absent or expired entry (values may be None)
Missing = Literal[_Missing.MISSING]


class ExpiringCache(Generic[K, V]):
    def __init__(self, seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Missing:
        """The value of a fresh entry, else :data:`MISSING`."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return MISSING
        return value

    def put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + self.seconds, value)

    def __len__(self) -> int:
        return len(self._entries)
