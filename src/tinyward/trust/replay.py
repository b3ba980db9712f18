"""The replay rule, one place for every way a report reaches a fleet.

A device numbers its reports from one strictly increasing counter
(:class:`tinyward.link.queue.ReportQueue`), whether a report leaves by the link or by a QR
code. A fleet therefore accepts a report only if its sequence number is above the highest
it already holds for that device: a replay, a duplicate and a report out of order are all
refused by the same comparison. Pure: numbers in, a verdict out.
"""

from __future__ import annotations

__all__ = ["is_replay"]


def is_replay(seq: int, last_stored: int) -> bool:
    """True if a report numbered ``seq`` must be refused because the fleet already holds
    ``last_stored`` (0 when it holds none) for the same device."""
    return seq <= last_stored
