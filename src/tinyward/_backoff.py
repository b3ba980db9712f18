"""Exponential backoff, one pure helper for every retry in tinyward (sans-IO: no clock).

Used by the device link (:mod:`tinyward.link.client`: full jitter, so a fleet that lost
its server does not come back in lockstep) and by the application supervisor
(:mod:`tinyward.app.supervisor`: no jitter, so restarts are a deterministic function of
the faults, which the leakage bound relies on).
"""

from __future__ import annotations

import random

from tinyward.errors import Misuse


class Backoff:
    """The n-th consecutive failure waits ``min(maximum, initial * 2**n)``.

    With ``rng``, the wait is jittered: uniform in ``[initial / 4, that ceiling]`` (the
    floor keeps a caller from spinning). Without it, the wait is exactly the ceiling.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None,
                 *, jitter: bool = True) -> None:
        if not 0 < initial <= maximum:
            raise Misuse("backoff needs 0 < initial <= maximum")
        self._initial, self._max = initial, maximum
        # Jitter spreads retries, it guards no secret: a seeded PRNG is right here.
        self._rng = (rng or random.Random()) if jitter else None  # noqa: S311
        self.failures = 0

    def ceiling(self) -> float:
        """The longest wait after the next failure (no state change)."""
        return float(min(self._max, self._initial * (2 ** min(self.failures, 30))))

    def next_delay(self) -> float:
        """Register one more failure and return how long to wait before the next try."""
        ceiling = self.ceiling()
        self.failures += 1
        if self._rng is None:
            return ceiling
        return self._rng.uniform(self._initial / 4, ceiling)

    def reset(self) -> None:
        self.failures = 0


__all__ = ["Backoff"]
