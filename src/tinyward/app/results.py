"""What a device runner reads results from: the one :class:`ResultSource` protocol.

Both runners use it, the connected one (:mod:`tinyward.link.runner`) and the air-gapped
one (:mod:`tinyward.readout.airgapped`); the sandboxed application
(:class:`tinyward.app.source.AppResultSource`) and the simulation
(:class:`tinyward.link.runner.SimulatedSensor`) implement it. Typing only: importing it
loads nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["ResultSource"]


class ResultSource(Protocol):
    """Where results come from (the sandboxed application, or a simulation).

    Optionally, a source may also offer ``incidents() -> dict[str, int]`` (running totals,
    e.g. contract violations of the application; each report carries the increase) and a
    ``healthy`` attribute (a report says ``degraded`` while it is false), as
    :class:`tinyward.app.source.AppResultSource` does.
    """

    def take(self, now: float) -> list[Mapping[str, Any]]:
        """Every result produced up to ``now`` (monotonic seconds) not taken before."""
        ...

    def next_time(self) -> float | None:
        """When the next result is due, if known (only the unshaped benchmark mode uses it)."""
        ...
