"""The device loop in air-gapped mode: no network at all, enforced by the kernel.

:func:`run_air_gapped` first installs the seccomp filter of :mod:`tinyward.trust.airgap`
on its own process (inherited by everything it starts, the sandboxed application
included), takes the device folder's instance lock (one running instance per folder, in
every mode) recording the mode it finds enforced (``device status`` shows it), and then,
once per interval, asks its results source for a result and keeps the newest ones for the local
readout. It stops at the end of ``duration`` or on
SIGTERM/SIGINT, after its last write has completed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from tinyward.app.results import ResultSource
from tinyward.readout import state as display
from tinyward.trust.airgap import enforced_mode, forbid_network
from tinyward.trust.device import Device
from tinyward.trust.instance import InstanceLock


def run_air_gapped(
    device: Device,
    source: ResultSource,
    *,
    interval: float = 1.0,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_tick: Callable[[display.DisplayState], None] | None = None,
) -> display.DisplayState:
    """Run until ``duration`` passes, ``stop`` is set, or SIGTERM/SIGINT arrives."""
    forbid_network()
    # The mode stated is the one tried in this process, never the provisioned one; and one
    # instance per device folder (re-entrant: the CLI command may already hold it).
    mode = enforced_mode()
    with InstanceLock(device.directory, mode):
        return _loop(device, source, mode, interval, duration, stop, on_tick)


def _loop(
    device: Device,
    source: ResultSource,
    mode: str,
    interval: float,
    duration: float | None,
    stop: threading.Event | None,
    on_tick: Callable[[display.DisplayState], None] | None,
) -> display.DisplayState:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    deadline = None if duration is None else time.monotonic() + duration
    current = display.load(device.storage)
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        results = current.results + tuple(source.take(time.monotonic()))
        counter = getattr(source, "incidents", None)
        current = display.DisplayState(
            updated_at=int(time.time()),
            results=results[-display.KEEP_RESULTS:],
            incidents=counter() if callable(counter) else dict(current.incidents),
            health="ok" if getattr(source, "healthy", True) else "degraded",
            mode=mode,
        )
        display.save(device.storage, current)
        if on_tick:
            on_tick(current)
        stop.wait(interval)
    return current
