"""The sandboxed application as the device's source of results.

The device runners (connected: :mod:`tinyward.link.runner`; air-gapped:
:mod:`tinyward.readout.airgapped`) ask a results source for "every result produced up to
now". :class:`AppResultSource` answers by feeding the application the frames that were due
by then — at the manifest's frame rate, from a frame iterator (a CSV log, a simulation, or
real hardware) — through the :class:`~tinyward.app.supervisor.Supervisor`, which checks
each result against the contract and restarts a misbehaving application. What the
application did wrong is counted in :meth:`incidents` and the runners carry those counts
in the next report; :attr:`healthy` is false while it restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tinyward.app.manifest import Manifest
from tinyward.app.sandbox import Protection, SandboxConfig
from tinyward.app.supervisor import Supervisor

#: Never feed more than this many frames in one call, however late the caller is.
MAX_FRAMES_PER_TAKE = 1000


class AppResultSource:
    """Results from a sandboxed application fed with ``frames`` at the manifest's rate."""

    def __init__(self, supervisor: Supervisor, frames: Iterator[np.ndarray]) -> None:
        self.supervisor = supervisor
        self._frames = frames
        self._period = 60.0 / supervisor.manifest.input.frames_per_minute
        self._next: float | None = None
        self._exhausted = False
        self.frames_fed = 0
        #: the sandbox's layers as checked before the first start (set by the device)
        self.protections: list[Protection] = []

    @classmethod
    def start(cls, manifest: Manifest, frames: Iterator[np.ndarray],
              sandbox_config: SandboxConfig | None = None) -> AppResultSource:
        """Start the application in its sandbox (a failed start is an incident, not an error)."""
        supervisor = Supervisor(manifest, sandbox_config)
        supervisor.start()
        return cls(supervisor, frames)

    def next_time(self) -> float | None:
        return self._next

    def take(self, now: float) -> list[Mapping[str, Any]]:
        """Feed every frame due by ``now`` (monotonic seconds); return the accepted results."""
        if self._next is None:
            self._next = now
        results: list[Mapping[str, Any]] = []
        fed = 0
        while not self._exhausted and self._next <= now and fed < MAX_FRAMES_PER_TAKE:
            frame = next(self._frames, None)
            if frame is None:
                self._exhausted = True
                break
            outcome = self.supervisor.process(frame)
            if outcome.result is not None:
                results.append(outcome.result)
            self._next += self._period
            fed += 1
        self.frames_fed += fed
        if fed == MAX_FRAMES_PER_TAKE:
            self._next = max(self._next, now)  # far behind: skip ahead rather than catch up
        return results

    def incidents(self) -> dict[str, int]:
        """What the application did wrong so far, by kind (running totals)."""
        counts = {f"app_{kind}": n for kind, n in self.supervisor.incidents().items()}
        if self.supervisor.frames_dropped:
            counts["app_frames_dropped"] = self.supervisor.frames_dropped
        return counts

    @property
    def healthy(self) -> bool:
        return self.supervisor.healthy and not self._exhausted

    def close(self) -> None:
        self.supervisor.close()
