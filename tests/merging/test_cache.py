"""MergedCache: LRU order, byte bound, counters, thread safety."""

from __future__ import annotations

import threading

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.merging import MergedCache


def _entry(n_floats: int) -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(n_floats)}  # 4 bytes per float


def test_lru_eviction_order_and_byte_bound() -> None:
    cache = MergedCache(max_bytes=100)
    assert cache.put("a", _entry(10)) and cache.put("b", _entry(10))  # 40 + 40 bytes
    assert cache.nbytes == 80 and len(cache) == 2
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", _entry(5))  # 20 bytes: would be 100, fits exactly
    assert cache.keys() == ["b", "a", "c"] and cache.evictions == 0
    cache.put("d", _entry(10))  # needs 40 bytes: evicting b (the LRU) is enough
    assert cache.keys() == ["a", "c", "d"] and cache.evictions == 1
    assert cache.nbytes == 100
    cache.put("e", _entry(20))  # 80 bytes: a, c, then d must all go
    assert cache.keys() == ["e"] and cache.evictions == 4 and cache.nbytes == 80
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_oversized_entry_not_cached_and_replace() -> None:
    cache = MergedCache(max_bytes=64)
    cache.put("a", _entry(4))
    assert not cache.put("huge", _entry(17))  # 68 bytes > 64
    assert "huge" not in cache and cache.keys() == ["a"] and cache.evictions == 0
    cache.put("a", _entry(8))  # replacing a key updates the byte count
    assert cache.nbytes == 32 and len(cache) == 1
    assert not cache.put("a", _entry(100))  # an oversized replacement drops the stale entry
    assert len(cache) == 0 and cache.nbytes == 0


def test_remove_and_clear() -> None:
    cache = MergedCache(max_bytes=1000)
    for k in ("linear(h@1=1)", "linear(h@2=1)", "ties(x@1=1)"):
        cache.put(k, _entry(1))
    assert cache.remove_where(lambda k: "h@1" in k) == 1
    assert cache.remove("ties(x@1=1)") and not cache.remove("ties(x@1=1)")
    assert cache.keys() == ["linear(h@2=1)"] and cache.nbytes == 4
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValidationError, match="-1"):
        MergedCache(-1)


def test_threads_keep_bound() -> None:
    cache = MergedCache(max_bytes=400)

    def work(i: int) -> None:
        for j in range(200):
            cache.put(f"{i}-{j % 7}", _entry(10 + j % 5))
            cache.get(f"{(i + 1) % 4}-{j % 7}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes <= 400
    held = [cache.get(k) for k in list(cache.keys())]
    assert cache.nbytes == sum(v["w"].numel() * 4 for v in held if v is not None)
    assert cache.hits + cache.misses == 800 + len(held)


def test_make_room_hands_back_evicted_tensors() -> None:
    cache = MergedCache(max_bytes=3 * 400)
    entries = {k: {"w": torch.full((100,), float(i))} for i, k in enumerate("abc")}
    for k, t in entries.items():
        cache.put(k, t)
    cache.get("a")  # LRU order now b, c, a
    freed = cache.make_room(2 * 400)
    assert [f["w"] for f in freed] == [entries["b"]["w"], entries["c"]["w"]]
    assert freed[0]["w"] is entries["b"]["w"]
    assert cache.keys() == ["a"] and cache.nbytes == 400 and cache.evictions == 2
    assert cache.make_room(4 * 400) == [] and cache.keys() == ["a"]  # would not fit anyway
    assert cache.make_room(400) == [] and cache.keys() == ["a"]  # fits already
