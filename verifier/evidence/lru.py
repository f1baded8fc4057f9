"""A bounded, thread-safe least-recently-used map: the one the evidence caches share.

Each verified-result cache (NVIDIA certificate digests, OCSP answers, RIMs and their
signing paths, certificate links; SNP key chains; TDX PCK chains) keys its entries by
the exact bytes and trust inputs they were verified from, holds at most a fixed
number, and drops the least recently used one first; a miss only costs verifying
again. Lookups and updates take one lock, so concurrent rounds can share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedLru"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """At most ``limit`` entries; :meth:`get` counts as a use."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an LRU map holds at least one entry")
        self._limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value kept for ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the least recently used beyond the limit."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
