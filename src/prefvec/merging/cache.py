"""A byte-bounded LRU cache of merged weights, keyed by a merge spec's canonical key."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch

logger = logging.getLogger(__name__)

Tensors = Mapping[str, torch.Tensor]


def tensors_nbytes(tensors: Tensors) -> int:
    """Bytes held by the tensors of a mapping (``numel · element_size`` summed)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


class MergedCache:
    """LRU cache of merged weight sets, bounded by total bytes.

    ``put`` evicts least recently used entries *before* inserting, so the cache never holds more
    than ``max_bytes``; an entry larger than ``max_bytes`` is not cached at all (and replaces no
    entry). ``get`` marks an entry most recently used. All methods take one lock, so the cache
    may be shared between threads. Cached tensors are stored as given (not copied): callers must
    not modify them afterwards.

    Args:
        max_bytes: the byte bound (0 disables caching).

    Attributes:
        hits / misses: ``get`` outcomes. evictions: entries evicted to make room.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            from prefvec.errors import ValidationError

            raise ValidationError(f"`max_bytes` must be >= 0, got {max_bytes}", field="max_bytes")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, tuple[dict[str, torch.Tensor], int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors cached under ``key`` (marked most recently used), or None on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: str, tensors: Tensors) -> bool:
        """Cache ``tensors`` under ``key``, evicting LRU entries first; returns whether cached."""
        size = tensors_nbytes(tensors)
        with self._lock:
            self._pop(key)
            if size > self.max_bytes:
                logger.debug("cache: %s (%d B) exceeds max_bytes=%d", key, size, self.max_bytes)
                return False
            while self._entries and self._nbytes + size > self.max_bytes:
                old, _ = self._pop_lru()
                self.evictions += 1
                logger.debug("cache: evicted %s", old)
            self._entries[key] = (dict(tensors), size)
            self._nbytes += size
            return True

    def make_room(self, nbytes: int) -> list[dict[str, torch.Tensor]]:
        """Evict LRU entries until ``nbytes`` more would fit, and hand their tensors back.

        Lets a caller reuse an evicted entry's buffers for the entry it is about to ``put``
        (e.g. ``ModelMerger.snapshot(out=...)``) instead of allocating fresh memory. Nothing is
        evicted when ``nbytes`` exceeds ``max_bytes`` (such an entry would not be cached).
        The caller owns the returned tensors: only use it where no one else still reads entries
        it got from :meth:`get` (the server's scheduler thread is the only reader).

        Returns:
            the evicted entries' tensor dicts, least recently used first.
        """
        freed: list[dict[str, torch.Tensor]] = []
        with self._lock:
            if nbytes > self.max_bytes:
                return freed
            while self._entries and self._nbytes + nbytes > self.max_bytes:
                old, (tensors, _) = next(iter(self._entries.items()))
                self._pop(old)
                self.evictions += 1
                freed.append(tensors)
                logger.debug("cache: evicted %s (buffers handed back)", old)
        return freed

    def remove(self, key: str) -> bool:
        """Drop ``key`` if cached; returns whether it was."""
        with self._lock:
            return self._pop(key)

    def remove_where(self, predicate: Callable[[str], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate`` (e.g. it names a deleted vector)."""
        with self._lock:
            doomed = [k for k in self._entries if predicate(k)]
            for k in doomed:
                self._pop(k)
            return len(doomed)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def _pop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._nbytes -= entry[1]
        return True

    def _pop_lru(self) -> tuple[str, int]:
        key, (_, size) = self._entries.popitem(last=False)
        self._nbytes -= size
        return key, size
