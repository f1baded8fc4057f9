from __future__ import annotations

import pytest

from agent.backoff import Backoff


def _upper(low: float, high: float) -> float:
    return high


def test_ceiling_doubles_up_to_the_cap() -> None:
    b = Backoff(initial_seconds=1.0, max_seconds=10.0, uniform=_upper)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.attempt == 6


def test_reset_starts_over() -> None:
    b = Backoff(initial_seconds=0.5, max_seconds=60.0, uniform=_upper)
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.attempt == 0
    assert b.next_delay() == 0.5


def test_full_jitter_draws_from_zero_to_ceiling() -> None:
    calls: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        calls.append((low, high))
        return low

    b = Backoff(initial_seconds=1.0, max_seconds=3.0, uniform=record)
    assert b.next_delay() == 0.0
    b.next_delay()
    b.next_delay()
    assert calls == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]


def test_default_randomness_stays_in_bounds() -> None:
    b = Backoff(initial_seconds=1.0, max_seconds=5.0)
    for _ in range(200):
        ceiling = b.ceiling()
        assert 0.0 <= b.next_delay() <= ceiling <= 5.0


def test_many_failures_do_not_overflow() -> None:
    b = Backoff(initial_seconds=1.0, max_seconds=60.0, uniform=_upper)
    for _ in range(5000):
        assert b.next_delay() <= 60.0


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_rejects_bad_bounds(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="initial_seconds"):
        Backoff(initial_seconds=initial, max_seconds=maximum)
