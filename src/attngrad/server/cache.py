"""A bounded, thread-safe LRU cache keyed by content hash.

Results (predictions, maps, overlay PNGs) and decoded images are stored under
the SHA-256 of what produced them, so the same image and parameters are never
computed twice while they stay in the cache, and memory stays bounded by both
an entry count and a byte budget.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of raw bytes (an uploaded file, a sample image)."""
    return hashlib.sha256(data).hexdigest()


def key_of(*parts: Any) -> str:
    """A cache key for JSON-serialisable parts (content hashes and request parameters)."""
    return content_hash(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode())


class LRUCache(Generic[V]):
    """Least-recently-used cache bounded by ``max_items`` entries and ``max_bytes`` total size.

    Args:
        max_items: most entries kept.
        max_bytes: most total size kept, as measured by ``sizeof(value)``.
        sizeof: size of a value in bytes (default: every entry counts 1 byte, so only
            ``max_items`` binds).
    """

    def __init__(self, max_items: int = 256, max_bytes: int = 64 << 20, sizeof: Callable[[V], int] | None = None):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("an LRU cache needs max_items >= 1 and max_bytes >= 1")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._sizeof = sizeof or (lambda _value: 1)
        self._data: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        """The value for ``key`` (marking it most recently used), or ``None``."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, value: V) -> None:
        """Store ``value``; evict least recently used entries until both bounds hold.

        A value larger than ``max_bytes`` on its own is not stored.
        """
        size = self._sizeof(value)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._data[key] = (value, size)
            self._bytes += size
            while len(self._data) > self.max_items or self._bytes > self.max_bytes:
                _, (_, evicted) = self._data.popitem(last=False)
                self._bytes -= evicted

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "items": len(self._data),
                "bytes": self._bytes,
                "max_items": self.max_items,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }
