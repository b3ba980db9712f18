"""The device loop in air-gapped mode: no network at all, enforced by the kernel.

:func:`run_air_gapped` first installs the seccomp filter of :mod:`tinyward.trust.airgap`
on its own process (inherited by everything it starts, the sandboxed application
included), records the mode in protected storage (it shows in the device's status and in
its attestation tokens), and then, once per interval, asks its results source for a result
and keeps the newest ones for the local readout. It stops at the end of ``duration`` or on
SIGTERM/SIGINT, after its last write has completed.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinyward.readout import state as display
from tinyward.trust.airgap import forbid_network
from tinyward.trust.device import Device

ResultsSource = Callable[[], dict[str, Any] | None]


@dataclass
class SimulatedDoorwayCounter:
    """A stand-in sensor until an application is configured: people inside a room.

    Says so in its name; real results come from the sandboxed application (tinyward.app).
    """

    seed: int = 0
    count: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self) -> dict[str, Any] | None:
        step = self._rng.choice((-1, 0, 0, 1, 1))
        self.count = max(0, min(999, self.count + step))
        return {"count": self.count}


def run_air_gapped(
    device: Device,
    source: ResultsSource,
    *,
    interval: float = 1.0,
    duration: float | None = None,
    stop: threading.Event | None = None,
    incidents: Callable[[], dict[str, int]] | None = None,
    on_tick: Callable[[display.DisplayState], None] | None = None,
) -> display.DisplayState:
    """Run until ``duration`` passes, ``stop`` is set, or SIGTERM/SIGINT arrives."""
    forbid_network()
    device.set_mode("air-gapped")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    deadline = None if duration is None else time.monotonic() + duration
    current = display.load(device.storage)
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        result = source()
        results = current.results + ((result,) if result is not None else ())
        current = display.DisplayState(
            updated_at=int(time.time()),
            results=results[-display.KEEP_RESULTS:],
            incidents=incidents() if incidents else dict(current.incidents),
            health="ok",
            mode="air-gapped",
        )
        display.save(device.storage, current)
        if on_tick:
            on_tick(current)
        stop.wait(interval)
    return current
