"""verifier.evidence.lru.BoundedLru: the map every evidence cache shares."""

from __future__ import annotations

import threading

import pytest

from verifier.evidence.lru import BoundedLru


def test_least_recently_used_goes_first() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # now "b" is the least recently used
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert len(lru) == 2
    lru.put("a", 4)  # replacing counts as a use and keeps the size
    assert (lru.get("a"), len(lru)) == (4, 2)
    lru.clear()
    assert (len(lru), lru.get("a")) == (0, None)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BoundedLru[str, int](0)


def test_concurrent_use_keeps_the_bound() -> None:
    lru: BoundedLru[int, int] = BoundedLru(50)

    def work(offset: int) -> None:
        for i in range(2000):
            lru.put(offset + i, i)
            lru.get(offset + i // 2)

    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lru) == 50
