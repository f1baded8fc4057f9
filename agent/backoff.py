"""Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
And Jitter"): the n-th delay is uniform in [0, min(cap, initial * 2**n)], so a fleet of
agents that lost the verifier at the same moment does not reconnect in lockstep."""

from __future__ import annotations

import secrets
from collections.abc import Callable

_MAX_EXPONENT = 62  # keeps 2**n a finite float long after the cap is reached


def _system_uniform(low: float, high: float) -> float:
    return secrets.SystemRandom().uniform(low, high)


class Backoff:
    def __init__(
        self,
        *,
        initial_seconds: float,
        max_seconds: float,
        uniform: Callable[[float, float], float] = _system_uniform,
    ) -> None:
        if initial_seconds <= 0 or max_seconds < initial_seconds:
            raise ValueError("need 0 < initial_seconds <= max_seconds")
        self._initial = initial_seconds
        self._max = max_seconds
        self._uniform = uniform
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Failures since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        exponent = min(self._attempt, _MAX_EXPONENT)
        return float(min(self._max, self._initial * 2.0**exponent))

    def next_delay(self) -> float:
        """Delay before the next try; each call counts one more failure."""
        delay = self._uniform(0.0, self.ceiling())
        self._attempt += 1
        return max(0.0, min(delay, self._max))

    def reset(self) -> None:
        self._attempt = 0
