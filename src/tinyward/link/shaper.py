"""The traffic shaper: constant rate, constant size (sans-IO, injected clock).

Encrypted traffic still tells an eavesdropper *when* something happened (a message goes
out right after an event) and *how much* (a busy message is longer). The shaper removes
both signals:

- **Constant rate.** Reports leave on a fixed grid, ``start + k * interval``, whether or
  not anything happened. Results that arrive between two ticks wait for the next tick.
- **Constant size.** Every report is padded to exactly ``size`` bytes by the report codec;
  a quiet tick yields an empty batch that becomes a report of the same size.
- **Bounded.** At most ``max_results`` results wait for one tick (what fits in ``size``).
  Extra results are *not* silently lost: they are counted, and the count travels in the
  next report's incidents as ``dropped_results``.

The shaper does no I/O and never reads a clock: the caller passes ``now`` (seconds on a
monotonic clock) to every method, so every schedule is a unit test. If the caller falls
behind by more than one interval (the process was suspended), the missed slots are skipped
and counted rather than sent in a burst: a burst would itself be a signal, and an empty
catch-up report carries nothing.

The bandwidth this costs is :func:`bandwidth_bytes_per_hour` (see ``docs/link.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyward.errors import Misuse

# TLS 1.3 record overhead (RFC 8446 §5.2): 5-byte header, 1-byte inner content type and a
# 16-byte AEAD tag (AES-GCM and ChaCha20-Poly1305 alike).
TLS13_RECORD_OVERHEAD = 5 + 1 + 16


@dataclass(frozen=True)
class ShaperConfig:
    """How a device's reports are shaped.

    - ``interval``: seconds between reports (one report per interval, always).
    - ``size``: exact size in bytes of every signed report (the COSE_Sign1 message).
    - ``max_results``: results one report carries; more wait-listed results are dropped
      and counted. The default fits comfortably in the default 1024-byte report.
    """

    interval: float = 10.0
    size: int = 1024
    max_results: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.interval, (int, float)) and math.isfinite(self.interval)
                and 0.01 <= self.interval <= 86400):
            raise Misuse(f"interval must be between 0.01 s and one day, not {self.interval!r}")
        if not isinstance(self.size, int) or not 256 <= self.size <= 16384:
            raise Misuse(f"report size must be 256..16384 bytes, not {self.size!r}")
        if not isinstance(self.max_results, int) or not 0 <= self.max_results <= 32:
            raise Misuse(f"max_results must be 0..32, not {self.max_results!r}")


@dataclass(frozen=True)
class Batch:
    """What one tick sends: the results gathered since the previous tick.

    ``slot`` is the scheduled time of the tick (not the time the caller noticed it);
    ``dropped_results`` and ``missed_slots`` count what happened since the previous batch
    (deltas, like every incident count in a report).
    """

    slot: float
    results: tuple[Mapping[str, Any], ...]
    dropped_results: int
    missed_slots: int


class Shaper:
    """Collects results and releases them as one batch per interval (see module docstring)."""

    def __init__(self, config: ShaperConfig, start: float) -> None:
        self._config = config
        self._next = float(start) + config.interval
        self._pending: list[Mapping[str, Any]] = []
        self._dropped_results = 0
        self._missed_slots = 0
        self._told_dropped = 0
        self._told_missed = 0

    @property
    def config(self) -> ShaperConfig:
        return self._config

    @property
    def dropped_results(self) -> int:
        """Results refused because the batch was full (running total)."""
        return self._dropped_results

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add_result(self, result: Mapping[str, Any]) -> bool:
        """Queue one result for the next tick. Returns False (and counts it) if full."""
        if len(self._pending) >= self._config.max_results:
            self._dropped_results += 1
            return False
        self._pending.append(result)
        return True

    def next_due(self) -> float:
        """The time of the next tick; sleep until then."""
        return self._next

    def poll(self, now: float) -> Batch | None:
        """Return the batch of the tick that is due at ``now``, or None if none is due.

        Call it again after it returns a batch: it never returns two batches for one slot.
        """
        if now < self._next:
            return None
        slot = self._next
        behind = int((now - slot) // self._config.interval)
        if behind > 0:
            # Suspended for several intervals: skip to the latest slot (see docstring).
            self._missed_slots += behind
            slot += behind * self._config.interval
        self._next = slot + self._config.interval
        results, self._pending = tuple(self._pending), []
        batch = Batch(slot, results, self._dropped_results - self._told_dropped,
                      self._missed_slots - self._told_missed)
        self._told_dropped, self._told_missed = self._dropped_results, self._missed_slots
        return batch


def bandwidth_bytes_per_hour(
    config: ShaperConfig,
    request_overhead: int = 0,
    response_bytes: int = 0,
    records_per_exchange: int = 2,
) -> float:
    """Bytes per hour on the wire (TLS layer) for one shaped device on a kept-alive connection.

    Per report: the report (``config.size``), the HTTP request head
    (``request_overhead``), the HTTP response (``response_bytes``), and one TLS 1.3 record
    overhead (22 bytes) for each of ``records_per_exchange`` records (one up, one down).
    TCP/IP headers come on top (about 52 bytes per segment and ACK on IPv4).
    """
    per_report = (config.size + request_overhead + response_bytes
                  + records_per_exchange * TLS13_RECORD_OVERHEAD)
    return per_report * 3600.0 / config.interval


__all__ = ["TLS13_RECORD_OVERHEAD", "Batch", "Shaper", "ShaperConfig", "bandwidth_bytes_per_hour"]
