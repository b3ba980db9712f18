"""Brute-force lockout for the local readout, as a pure state machine (no I/O, no clock).

Rules (ETSI EN 303 645 provision 5.1-5: make brute force impractical):

1. A few attempts are free (``free_attempts``). After that each failure doubles the wait
   before the next attempt may even be *checked*: ``base_delay``, ``2 × base_delay`` …,
   capped at ``max_delay``. The cap keeps the owner able to get in once the wait has
   passed: an attacker cannot lock the owner out for good (no denial of service).
2. An attempt is counted as a failure **before** its code is checked, and the new state is
   persisted first; only a correct code resets it. So killing the process (or pulling the
   power) in the middle of a check cannot undo the count.
3. A successful login resets the count.

:func:`checked_attempt` is the one protocol every login under a lockout follows (rules 2
and 3 in order). Its callers persist :class:`LockoutState` (``to_cbor``) so a restart does
not reset it, and hold a lock across the whole attempt: the device's readout in protected
storage (``trust/readout.py``), the fleet dashboard's admin login in a file of the fleet
folder (``fleet/dashboard/auth.py``). They supply ``now`` (wall-clock seconds, since the
wait must survive power loss; a device whose clock an attacker can set forward needs a
hardware monotonic clock instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cbor2

from tinyward.errors import BadInput
from tinyward.trust.errors import TrustError


class LockedOut(TrustError, BadInput):
    """Too many failed attempts: no code is checked until the wait is over."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds
        super().__init__(
            f"too many failed attempts: try again in {wait_seconds:.0f} s "
            "(the wait doubles with every further failure)"
        )


@dataclass(frozen=True)
class LockoutPolicy:
    """How many free attempts, and how the wait grows after them."""

    free_attempts: int = 5
    base_delay: float = 60.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.free_attempts < 1 or self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError(
                "lockout policy needs free_attempts ≥ 1 and 0 < base_delay ≤ max_delay"
            )

    def delay_after(self, failures: int) -> float:
        """The wait imposed after ``failures`` consecutive failures."""
        if failures < self.free_attempts:
            return 0.0
        exponent = min(failures - self.free_attempts, 62)
        return float(min(self.base_delay * 2.0**exponent, self.max_delay))

    def max_attempts_within(self, seconds: float) -> int:
        """The most codes an attacker can have checked in ``seconds`` from a fresh state."""
        attempts, clock, failures = 0, 0.0, 0
        while clock <= seconds:
            attempts += 1
            failures += 1
            clock += self.delay_after(failures)
            if attempts > 10_000_000:  # pragma: no cover - a policy with no real delay
                break
        return attempts

    def to_cbor(self) -> bytes:
        return cbor2.dumps([self.free_attempts, self.base_delay, self.max_delay])

    @classmethod
    def from_cbor(cls, data: bytes) -> LockoutPolicy:
        free, base, maximum = cbor2.loads(data)
        return cls(int(free), float(base), float(maximum))


@dataclass(frozen=True)
class LockoutState:
    """Consecutive failures and the earliest time the next attempt may be checked."""

    failures: int = 0
    not_before: float = 0.0

    def to_cbor(self) -> bytes:
        return cbor2.dumps([self.failures, self.not_before])

    @classmethod
    def from_cbor(cls, data: bytes) -> LockoutState:
        failures, not_before = cbor2.loads(data)
        return cls(int(failures), float(not_before))


def begin_attempt(state: LockoutState, policy: LockoutPolicy, now: float) -> LockoutState:
    """Admit one attempt, or raise :class:`LockedOut`.

    Returns the state to persist *before* checking the code: the attempt already counted
    as a failure.
    """
    if now < state.not_before:
        raise LockedOut(state.not_before - now)
    failures = state.failures + 1
    return LockoutState(failures, now + policy.delay_after(failures))


def succeeded() -> LockoutState:
    """The state after a correct code."""
    return LockoutState()


def checked_attempt(
    load: Callable[[], LockoutState],
    save: Callable[[LockoutState], object],
    policy: LockoutPolicy,
    now: float,
    check: Callable[[], bool],
) -> bool:
    """One attempt under the lockout: True if ``check()`` accepted the code.

    Raises :class:`LockedOut` (``check`` not called) inside the wait. Otherwise the
    attempt is saved as a failure *before* ``check`` runs, and only a success saves the
    reset state. The caller holds its storage lock around the call, so that concurrent
    attempts are checked one at a time.
    """
    save(begin_attempt(load(), policy, now))
    if not check():
        return False
    save(succeeded())
    return True
