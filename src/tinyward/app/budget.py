"""Limits the trusted core sets on an application's use of time (sans-IO, except one
``/proc`` read in :func:`process_cpu_seconds`).

- :class:`CpuBudget`: CPU seconds per wall-clock second, with a burst — a token bucket
  refilled at ``share`` CPU-seconds per second, holding at most ``burst``. An app that
  spends more than that (in any of its threads, between frames included) is over budget:
  a fault, whatever its manifest says.
- :data:`FAULT_CLASSES`: the small, fixed alphabet in which an application's faults leave
  the device. The supervisor keeps the detailed kind for people on the device; reports
  carry only the class, so an application choosing *which* fault to commit chooses among
  three symbols, not fifteen (issue 12, item 3).
"""

from __future__ import annotations

import os

#: detailed incident kind -> the class reported off the device
FAULT_CLASSES: dict[str, str] = {
    # the application died or could not start
    "crash": "crash", "cpu_limit": "crash", "start_failed": "crash",
    # it took too long or used too much CPU
    "hang": "stall", "slow": "stall", "over_budget": "stall",
    # it sent something the core refused (contract or protocol)
    "not_a_map": "refused", "extra_field": "refused", "missing_field": "refused",
    "wrong_type": "refused", "out_of_range": "refused", "too_frequent": "refused",
    "oversize": "refused", "truncated": "refused", "not_cbor": "refused",
    "malformed": "refused", "unsolicited": "refused",
}
#: the alphabet itself (every kind not listed above is reported as "refused")
ALPHABET: tuple[str, ...] = ("crash", "stall", "refused")


def fault_class(kind: str) -> str:
    return FAULT_CLASSES.get(kind, "refused")


class CpuBudget:
    """At most ``share`` CPU-seconds per wall second, bursts up to ``burst`` seconds."""

    def __init__(self, share: float, burst: float) -> None:
        if not 0 < share <= 1 or burst <= 0:
            raise ValueError("CPU budget needs 0 < share <= 1 and burst > 0")
        self.share, self.burst = share, burst
        self._tokens = burst
        self._wall: float | None = None
        self._cpu = 0.0

    def restart(self, wall: float, cpu: float) -> None:
        """A new process: full bucket, counting from its CPU time now."""
        self._tokens, self._wall, self._cpu = self.burst, wall, cpu

    def charge(self, wall: float, cpu: float) -> bool:
        """The process has used ``cpu`` seconds in total at ``wall``; False if over budget."""
        if self._wall is None:
            self.restart(wall, cpu)
            return True
        refill = max(0.0, wall - self._wall) * self.share
        self._tokens = min(self.burst, self._tokens + refill) - max(0.0, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu
        return self._tokens >= 0

    @property
    def remaining(self) -> float:
        return self._tokens


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


__all__ = ["ALPHABET", "FAULT_CLASSES", "CpuBudget", "fault_class", "process_cpu_seconds"]
