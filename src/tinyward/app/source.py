"""The sandboxed application as the device's source of results.

The device runners (connected: :mod:`tinyward.link.runner`; air-gapped:
:mod:`tinyward.readout.airgapped`) ask a results source for "every result produced up to
now". :class:`AppResultSource` feeds the application its frames **on a thread of its own**
(the frame clock), through the :class:`~tinyward.app.supervisor.Supervisor`, which checks
each result against the contract and restarts a misbehaving application. The report clock
never waits for the application: :meth:`take`, :meth:`incidents` and :attr:`healthy` only
read what the frame clock published, under a lock held for microseconds.

Limits the core sets, whatever the manifest asks (:class:`AppLimits`): a frame-rate cap,
and a per-frame deadline equal to the frame period (a frame the app has not answered when
the next one is due is ``slow``: a fault). With the supervisor's CPU budget and fault
window, an application can neither steer when reports leave (issue 12, item 2) nor say more
through its faults than the fault window allows (item 3).

``unsafe_inline_feed`` restores the old design — frames fed inside :meth:`take`, on the
report loop — for the tests and ``tinyward bench shaping`` that show the attack it allowed;
``unsafe_detailed_incidents`` reports every detailed fault kind at once, as before (with
``SupervisorConfig(fault_window_s=0)``, the old fault channel). Never use them on a device.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyward.app.manifest import Manifest
from tinyward.app.sandbox import Protection, SandboxConfig
from tinyward.app.supervisor import Supervisor, SupervisorConfig

#: Never feed more than this many frames in one call, however late the caller is (inline).
MAX_FRAMES_PER_TAKE = 1000
#: Results kept for the report clock (the contract's rate limit keeps far fewer in practice).
MAX_PENDING_RESULTS = 10_000


@dataclass(frozen=True)
class AppLimits:
    """What the core allows an application, whatever its manifest asks."""

    #: frames per second at most (a manifest asking more gets this many)
    max_frames_per_second: float = 20.0
    #: a frame's deadline is its period, but never shorter than this (scheduler jitter on
    #: a busy device is not the app's fault)
    min_deadline_s: float = 0.05


class AppResultSource:
    """Results from a sandboxed application fed with ``frames`` at the manifest's rate
    (capped by :class:`AppLimits`), on a frame-clock thread of its own."""

    def __init__(
        self,
        supervisor: Supervisor,
        frames: Iterator[np.ndarray],
        limits: AppLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        unsafe_inline_feed: bool = False,
        unsafe_detailed_incidents: bool = False,
    ) -> None:
        self.supervisor = supervisor
        self._detailed = unsafe_detailed_incidents
        self.limits = limits or AppLimits()
        self._frames = frames
        manifest_period = 60.0 / supervisor.manifest.input.frames_per_minute
        self.period = max(manifest_period, 1.0 / self.limits.max_frames_per_second)
        self.deadline = max(self.period, self.limits.min_deadline_s)
        self._clock = clock
        self._inline = unsafe_inline_feed
        self._next: float | None = None
        self._exhausted = False
        self.frames_fed = 0
        #: the sandbox's layers as checked before the first start (set by the device)
        self.protections: list[Protection] = []
        self._lock = threading.Lock()
        self._results: deque[Mapping[str, Any]] = deque(maxlen=MAX_PENDING_RESULTS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.core_errors = 0

    @classmethod
    def start(
        cls,
        manifest: Manifest,
        frames: Iterator[np.ndarray],
        config: SupervisorConfig | None = None,
        limits: AppLimits | None = None,
        *,
        sandbox_config: SandboxConfig | None = None,
        unsafe_inline_feed: bool = False,
        unsafe_detailed_incidents: bool = False,
    ) -> AppResultSource:
        """Start the application in its sandbox (a failed start is an incident, not an
        error). The frame clock starts at once; its first act is starting the app."""
        supervisor = Supervisor(manifest, sandbox_config, config)
        source = cls(supervisor, frames, limits, unsafe_inline_feed=unsafe_inline_feed,
                     unsafe_detailed_incidents=unsafe_detailed_incidents)
        if unsafe_inline_feed:
            supervisor.start()
        else:
            source._thread = threading.Thread(target=source._run, name="tinyward-frame-clock",
                                              daemon=True)
            source._thread.start()
        return source

    # ---- the frame clock (its own thread) ----------------------------------------------

    def _run(self) -> None:
        try:
            self.supervisor.start()
        except Exception:  # noqa: BLE001 (a core bug must not kill the frame clock silently)
            self.core_errors += 1
        next_at = self._clock()
        while not self._stop.is_set():
            delay = next_at - self._clock()
            if delay > 0 and self._stop.wait(delay):
                break
            frame = next(self._frames, None)
            if frame is None:
                self._exhausted = True
                break
            self._feed(frame)
            next_at += self.period
            now = self._clock()
            if now > next_at + self.period:
                next_at = now  # far behind (a slow frame): skip ahead, never catch up in a burst

    def _feed(self, frame: np.ndarray) -> None:
        try:
            outcome = self.supervisor.process(frame, deadline_s=self.deadline)
        except Exception:  # noqa: BLE001 (the supervisor never raises for the app; a bug)
            self.core_errors += 1
            return
        self.frames_fed += 1
        if outcome.result is not None:
            with self._lock:
                self._results.append(outcome.result)

    # ---- what the report clock reads -----------------------------------------------------

    def next_time(self) -> float | None:
        return self._next if self._inline else None

    def take(self, now: float) -> list[Mapping[str, Any]]:
        """Every result accepted since the previous call (never waits for the app)."""
        if self._inline:
            return self._take_inline(now)
        with self._lock:
            results = list(self._results)
            self._results.clear()
        return results

    def _take_inline(self, now: float) -> list[Mapping[str, Any]]:
        # The old design, kept only to show what it allowed: the report loop waits here
        # for as long as the application takes.
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
            self._next += self.period
            fed += 1
        self.frames_fed += fed
        if fed == MAX_FRAMES_PER_TAKE:
            self._next = max(self._next, now)
        return results

    def incidents(self) -> dict[str, int]:
        """What the application did wrong, by class (running totals, of the fault windows
        that are over). Detailed kinds stay on the device (:meth:`local_incidents`)."""
        if self._inline or self._detailed:
            return {f"app_{kind}": n for kind, n in self.supervisor.incidents().items()}
        counts, _ = self.supervisor.published(self._clock())
        return {f"app_{kind}": n for kind, n in counts.items()}

    def local_incidents(self) -> dict[str, int]:
        """Detailed kinds and frames not processed, for people on the device (not sent:
        their timing is the application's choice)."""
        counts = dict(self.supervisor.incidents())
        if self.supervisor.frames_dropped:
            counts["frames_dropped"] = self.supervisor.frames_dropped
        if self.core_errors:  # a bug in the core, caught so the frame clock goes on
            counts["core_errors"] = self.core_errors
        return counts

    @property
    def healthy(self) -> bool:
        if self._inline:
            return self.supervisor.healthy and not self._exhausted
        _, healthy = self.supervisor.published(self._clock())
        return healthy and not self._exhausted

    def close(self) -> None:
        """Stop the frame clock and the application (returns promptly: the app is killed,
        not waited for)."""
        self._stop.set()
        if self._thread is not None:
            # A frame in flight ends within its deadline (one period); a start may take
            # longer (the app's factory): then the app is killed, not waited for.
            self._thread.join(timeout=self.period + 0.5)
            if self._thread.is_alive():
                self.supervisor.interrupt()
                self._thread.join(timeout=10.0)
        self.supervisor.close()


__all__ = ["MAX_FRAMES_PER_TAKE", "AppLimits", "AppResultSource"]
