"""The trusted core's detectors for one device run, put together from the command line.

``tinyward device run --watch IFACE --net-model M [--sensor-model S]`` builds one
:class:`DeviceWatch`: the network watcher (capture socket + thread) and the tap on the
application's frames share one :class:`~tinyward.link.watch.Incidents`, whose running
totals the runner folds into the next report. With neither option it does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyward.link.watch import (
    IncidentLimits,
    Incidents,
    NetScorer,
    SensorScorer,
    TappedFrames,
    WatchError,
)
from tinyward.link.watch_capture import CaptureConfig, NetWatcher


class DeviceWatch:
    """See the module docstring. :meth:`start` raises before anything runs: a refused
    model (``WatchError``, ``ModelFileError``) or capture (``CaptureRefused``)."""

    def __init__(self, incidents: Incidents, watcher: NetWatcher | None,
                 sensor_model: Any | None) -> None:
        self.incidents = incidents
        self.watcher = watcher
        self._sensor_model = sensor_model
        self.taps: list[TappedFrames] = []

    @classmethod
    def start(cls, interface: str | None, net_model: Path | None,
              sensor_model: Path | None, *, limits: IncidentLimits | None = None,
              capture: CaptureConfig | None = None) -> DeviceWatch:
        from tinyward.detect.pipeline import SensorFeatures, load_model

        incidents = Incidents(limits)
        sensor = load_model(sensor_model) if sensor_model is not None else None
        if sensor is not None and not isinstance(sensor.features, SensorFeatures):
            raise WatchError("--sensor-model must be a sensor model (`tinyward detect train "
                             "--sensors FILE.csv`), not a packet model")
        watcher = None
        if interface is not None and net_model is not None:
            scorer = NetScorer(load_model(net_model))
            watcher = NetWatcher.open(interface, scorer, incidents, capture)
        return cls(incidents, watcher, sensor)

    def tap(self, frames: Iterator[Any], channels: tuple[str, ...]) -> Iterator[Any]:
        """The application's frames, scored on the core side first (sensor model only)."""
        if self._sensor_model is None:
            return frames
        tapped = TappedFrames(frames, SensorScorer(self._sensor_model, channels),
                              self.incidents, time.monotonic)
        self.taps.append(tapped)
        return tapped

    @property
    def active(self) -> bool:
        """Whether anything is watched (a network watcher or a sensor model)."""
        return self.watcher is not None or self._sensor_model is not None

    def totals(self) -> dict[str, int]:
        return self.incidents.totals()

    def status(self) -> dict[str, Any]:
        """Counters for the run's status file (on the device only)."""
        out: dict[str, Any] = {"incidents": self.incidents.totals(),
                               "alarms": dict(self.incidents.alarms),
                               "suppressed": dict(self.incidents.suppressed)}
        if self.watcher is not None:
            s = self.watcher.status()
            out["net"] = {"frames": s.frames, "packets": self.watcher.scorer.stats.packets,
                          "warmup_alarms": self.watcher.scorer.stats.warmup,
                          "kernel_drops": s.kernel_drops, "shed_seconds": s.shed_seconds,
                          "cpu_seconds": round(s.cpu_seconds, 6), "errors": s.errors}
        if self.taps:
            out["sensor"] = {"frames": sum(t.scorer.frames for t in self.taps),
                             "windows": sum(t.scorer.windows for t in self.taps),
                             "errors": sum(t.errors for t in self.taps)}
        return out

    def describe(self) -> list[str]:
        lines = []
        if self.watcher is not None:
            c = self.watcher.capture
            lines.append(f"capturing on {c.interface} (snap {c.config.snap} B, kernel queue "
                         f"{c.config.rcvbuf} B, at most {c.config.max_packets_per_second} "
                         "packets/s scored)")
            lines.append(f"network detector: {self.watcher.scorer.arithmetic}")
        if self._sensor_model is not None:
            lines.append(f"sensor detector on the application's frames: "
                         f"{getattr(self._sensor_model.detector, 'name', '?')}")
        if lines:
            lim = self.incidents.limits
            refill = f"1 per {1 / lim.per_second:g} s" if lim.per_second else "no more"
            lines.append(f"incidents: {lim.k} alarms within {lim.window:g} s make one; per "
                         f"kind at most {lim.burst:g} at once, then {refill}")
        return lines

    def summary(self) -> list[str]:
        lines = []
        if self.watcher is not None:
            s = self.watcher.status()
            per = s.cpu_seconds / s.frames * 1e6 if s.frames else 0.0
            lines.append(f"{s.frames} frames scored ({per:.0f} µs CPU each), "
                         f"{s.kernel_drops} dropped by the kernel queue, "
                         f"{s.shed_seconds} s over the packet budget, {s.errors} errors")
        for tap in self.taps:
            lines.append(f"{tap.scorer.frames} application frames scored, "
                         f"{tap.scorer.alarms} windows alarmed, {tap.errors} not scorable")
        if lines:
            totals = self.incidents.totals()
            lines.append("incidents raised: " + (", ".join(f"{k} {n}" for k, n in
                                                          sorted(totals.items())) or "none"))
        return lines

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
